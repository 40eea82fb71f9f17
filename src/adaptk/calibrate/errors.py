"""Errors of calibration and policy files (all ``AdaptkError``)."""

from __future__ import annotations

from adaptk.errors import AdaptkError


class PolicyFileError(AdaptkError, ValueError):
    """A policy file is malformed, from a future version, or made for another model."""


class CalibrationError(AdaptkError, ValueError):
    """Calibration cannot run with these inputs (too little text, bad targets)."""


class BudgetNotMetError(AdaptkError, ValueError):
    """No policy of the searched family meets the requested budget; ``best`` holds the closest."""

    def __init__(self, message: str, best=None) -> None:
        super().__init__(message)
        self.best = best

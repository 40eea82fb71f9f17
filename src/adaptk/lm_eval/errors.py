"""The errors of adaptk's lm-eval model."""

from __future__ import annotations

from adaptk.errors import AdaptkError


class LmEvalMissingError(AdaptkError, ImportError):
    """lm-evaluation-harness is not installed."""


class LmEvalArgsError(AdaptkError, ValueError):
    """A model argument of ``--model adaptk`` that cannot work (a bad path, value or combination)."""

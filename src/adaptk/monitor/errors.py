"""Errors of the routing monitor (all ``AdaptkError`` subclasses)."""

from __future__ import annotations

from adaptk.errors import AdaptkError


class MonitorError(AdaptkError, RuntimeError):
    """A monitor was used in a way that cannot work (attached twice, merged across models, ...)."""


class BaselineError(AdaptkError, ValueError):
    """A routing baseline file is malformed, of a newer format, or from another model."""

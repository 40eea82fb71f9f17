"""Errors of ``adaptk train``: each message says what to do."""

from __future__ import annotations

from adaptk.errors import AdaptkError
from adaptk.outputs import OutputExistsError  # one class for every command's "output exists" refusal


class TrainConfigError(AdaptkError, ValueError):
    """A training option that cannot work (unknown preset, bad value, corpus smaller than a batch)."""


class ResumeError(AdaptkError, RuntimeError):
    """--resume was asked but there is no usable checkpoint, or it does not match the config."""


__all__ = ["OutputExistsError", "ResumeError", "TrainConfigError"]

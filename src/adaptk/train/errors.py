"""Errors of ``adaptk train``: each message says what to do."""

from __future__ import annotations

from adaptk.errors import AdaptkError


class TrainConfigError(AdaptkError, ValueError):
    """A training option that cannot work (unknown preset, bad value, corpus smaller than a batch)."""


class OutputExistsError(AdaptkError, FileExistsError):
    """The output folder exists and neither --overwrite nor --resume was given."""


class ResumeError(AdaptkError, RuntimeError):
    """--resume was asked but there is no usable checkpoint, or it does not match the config."""

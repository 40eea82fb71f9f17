"""Errors of the data layer: each message says what to do."""

from __future__ import annotations

from adaptk.errors import AdaptkError


class CorpusError(AdaptkError, ValueError):
    """A corpus name, split or text that cannot be used (empty, unreadable, unknown, train on WikiText)."""


class DataNotFoundError(AdaptkError, FileNotFoundError):
    """The shared data folder (or a file in it) is missing."""


class TextFileError(CorpusError):
    """A text file that is missing, unreadable, binary (NUL bytes) or not valid UTF-8."""

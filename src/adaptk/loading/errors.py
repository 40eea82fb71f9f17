"""Errors of loading a model, its tokenizer or a text: each names the path or value and says what to do."""

from __future__ import annotations

from adaptk.errors import AdaptkError


class InputError(AdaptkError, ValueError):
    """A model, tokenizer or text that cannot be loaded."""


class ModelPathError(InputError):
    """A --model that is a local path that does not exist, or a folder that is not a model folder."""


class ModelFileError(InputError):
    """A weights file of a model folder that is truncated or corrupt."""


class TokenizerMissingError(InputError):
    """A model folder without tokenizer files."""


class HubUnreachableError(InputError):
    """A hub model name while the Hugging Face hub cannot be reached (or offline mode is set)."""

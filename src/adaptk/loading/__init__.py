"""Loading what a command runs on: a ``--model`` argument (shipped model, local folder or hub
name) to a model and tokenizer, and a text to token ids. Used by cli, monitor, bench, lm_eval
and evaluate; each failure raises an ``InputError`` that names the path and says what to do."""

from adaptk.loading.errors import (
    HubUnreachableError,
    InputError,
    ModelFileError,
    ModelPathError,
    TokenizerMissingError,
)
from adaptk.loading.model import (
    default_model_path,
    encode,
    load_model,
    load_model_and_tokenizer,
    load_text,
    load_tokenizer,
)
from adaptk.loading.modelspec import ModelSource, resolve_model

__all__ = ["HubUnreachableError", "InputError", "ModelFileError", "ModelPathError", "ModelSource",
           "TokenizerMissingError", "default_model_path", "encode", "load_model", "load_model_and_tokenizer",
           "load_text", "load_tokenizer", "resolve_model"]

"""Loading a model, its tokenizer and text: the one loader every command uses.

``--model`` is parsed by :func:`adaptk.loading.modelspec.resolve_model` ("default", a local
folder, or a hub name); a hub name is checked against the offline switches, the local cache and
a short connection probe before ``from_pretrained`` (which would otherwise retry for about a
minute with no network). Truncated or corrupt weight files, folders without tokenizer files and
models without a MoE layer each get an error that names the path and says what to do.
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from pathlib import Path

import torch

from adaptk.errors import UnsupportedModelError
from adaptk.loading import hub
from adaptk.loading.errors import (
    HubUnreachableError,
    InputError,
    ModelFileError,
    TokenizerMissingError,
)
from adaptk.loading.modelspec import ModelSource, default_model_folder, resolve_model

__all__ = ["InputError", "default_model_path", "encode", "has_tokenizer_files", "load_model",
           "load_model_and_tokenizer", "load_text", "load_tokenizer"]

log = logging.getLogger(__name__)

# any of these makes a folder's tokenizer loadable by AutoTokenizer (tokenizer.json: fast
# tokenizers; tokenizer.model / *.model: sentencepiece; vocab.json + merges.txt: GPT-2 BPE;
# vocab.txt: WordPiece; *.tiktoken: tiktoken)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.tiktoken")


def default_model_path() -> str:
    return str(default_model_folder())


def has_tokenizer_files(folder: str | Path) -> bool:
    folder = Path(folder)
    return any((folder / n).is_file() for n in TOKENIZER_FILES) or any(folder.glob("*.tiktoken"))


def _hub_local_only(name: str) -> bool:
    """For a hub name: True to load from the local cache only, False to let transformers download.
    Raises ``HubUnreachableError`` at once when neither can work."""
    offline = hub.offline_setting()
    cached = hub.is_cached(name)
    if offline:
        if not cached:
            raise HubUnreachableError(
                f"--model {name}: no local folder of that name, and {offline} is set (offline) but the model "
                "is not in the local Hugging Face cache; pass a local model folder or 'default', or download "
                "it once with network access")
        return True
    host, port = hub.endpoint()
    log.info("--model %s is a hub name: checking that the hub %s:%d is reachable (%.1f s at most)",
             name, host, port, hub.PROBE_TIMEOUT_S)
    if hub.reachable(host, port):
        log.info("loading %s from the hub (may download)", name)
        return False
    if cached:
        log.warning("the Hugging Face hub (%s:%d) is unreachable: loading the cached copy of %s", host, port, name)
        return True
    raise HubUnreachableError(
        f"--model {name}: no local folder of that name, and the Hugging Face hub ({host}:{port}) is unreachable "
        f"(no connection within {hub.PROBE_TIMEOUT_S:g} s) and the model is not in the local cache; pass a local "
        "model folder or 'default', or set HF_HUB_OFFLINE=1 to use a model from the local cache")


def corrupt_weight_file(folder: str | Path) -> tuple[Path, str] | None:
    """(file, reason) of the first weights file of ``folder`` that cannot be opened (a truncated or
    corrupt ``*.safetensors`` header, a ``*.bin`` that is not a complete torch zip archive), or None."""
    folder = Path(folder)
    for f in sorted(folder.glob("*.safetensors")):
        try:
            from safetensors import safe_open

            with safe_open(str(f), "pt"):
                pass
        except Exception as exc:  # SafetensorError, OSError: both mean the file cannot be used
            return f, str(exc)
    for f in sorted(folder.glob("*.bin")):
        if f.name.startswith(("pytorch_model", "model")) and not zipfile.is_zipfile(f):
            return f, "not a complete torch archive"
    return None


def _weights_error(source: ModelSource, exc: Exception) -> InputError | None:
    bad = corrupt_weight_file(source.path) if source.kind == "local" else None
    if bad is not None:
        return ModelFileError(
            f"--model {source.describe()}: the weights file {bad[0]} is truncated or corrupt ({bad[1]}); "
            "restore it (copy or download it again, or re-save the model with save_pretrained)")
    if type(exc).__name__ == "SafetensorError":
        return ModelFileError(f"--model {source.describe()}: cannot read the weights of {source.path} ({exc}); "
                              "download or save the model again")
    if isinstance(exc, OSError | ValueError | ImportError):
        return InputError(f"cannot load model {source.path!r}: {exc}")
    return None


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise InputError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return value


def _open(spec: str | None, dtype: str | torch.dtype) -> tuple[torch.nn.Module, ModelSource]:
    from transformers import AutoModelForCausalLM

    source = resolve_model(spec)
    if source.kind == "hub" and _hub_local_only(source.path):
        source = dataclasses.replace(source, local_only=True)
    kw = {"local_files_only": True} if source.local_only else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=_dtype(dtype), **kw)
    except Exception as exc:
        err = _weights_error(source, exc)
        if err is None:
            raise
        raise err from exc
    return model.eval(), source


def _require_moe(model, source: ModelSource, extra: str = "") -> None:
    from adaptk.models import find_moe_layers

    try:
        find_moe_layers(model)
    except UnsupportedModelError as exc:
        detail = f"{str(exc).rstrip('.')}{extra}." if extra else str(exc)
        raise UnsupportedModelError(f"--model {source.describe()} is not a Mixture-of-Experts model adaptk can "
                                    f"route: {detail}") from exc


def load_model(spec: str | None, dtype: str | torch.dtype = "float32", *,
               require_moe: bool = True) -> tuple[torch.nn.Module, ModelSource]:
    """(model in eval mode, where it came from) for a ``--model`` argument (None: the default model)."""
    model, source = _open(spec, dtype)
    if require_moe:
        _require_moe(model, source)
    return model, source


def _missing_tokenizer_text(folder: str) -> str:
    return (f"the model folder {folder} has no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)}, "
            "with tokenizer_config.json)")


def load_tokenizer(source: ModelSource):
    """The tokenizer of a model loaded by ``load_model`` (``source`` is what it returned)."""
    from transformers import AutoTokenizer

    if source.kind == "local" and not has_tokenizer_files(source.path):
        raise TokenizerMissingError(f"{_missing_tokenizer_text(source.path)}; save the model's tokenizer there "
                                    "(tokenizer.save_pretrained(folder))")
    kw = {"local_files_only": True} if source.local_only else {}
    try:
        return AutoTokenizer.from_pretrained(source.path, **kw)
    except (OSError, ValueError, ImportError, TypeError) as exc:
        raise InputError(f"cannot load the tokenizer of {source.path!r}: {exc}") from exc


def load_model_and_tokenizer(name_or_path: str | None, dtype: str | torch.dtype = "float32"):
    """(model, tokenizer, path) for a ``--model`` argument: "default" or None (the shipped model),
    a local folder, or a hub name. The model must hold a MoE layer adaptk supports."""
    model, source = _open(name_or_path, dtype)
    no_tok = source.kind == "local" and not has_tokenizer_files(source.path)
    _require_moe(model, source, f"; also, {_missing_tokenizer_text(source.path)}" if no_tok else "")
    tok = load_tokenizer(source)
    return model, tok, source.path


def encode(tokenizer, text: str) -> torch.Tensor:
    """text -> ids [L] int64 (no special tokens added)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def load_text(*, corpus: str | None = None, split: str = "test", text_file: str | None = None,
              dataset: str | None = None) -> tuple[str, str]:
    """(text, description). One of text_file / dataset / corpus. A text file is read strictly
    (``adaptk.data.read_text_file``: binary or non-UTF-8 files are refused with the byte offset)."""
    from adaptk.data.corpus import load_text as lt

    if text_file:
        from adaptk.data.text import read_text_file

        return read_text_file(text_file), f"file:{Path(text_file).name}"
    if dataset:
        return lt(f"hf:{dataset}", split), f"hf:{dataset}:{split}"
    name = corpus or "stdlib"
    return lt(name, split), f"{name}:{split}"


def load_documents(*, corpus: str | None = None, split: str = "test", text_file: str | None = None,
                   dataset: str | None = None) -> tuple[tuple[str, ...], str]:
    """(documents, description) for a spread sample: the files, books or articles of a whole
    corpus split (stdlib uncapped); a text file or dataset is one document."""
    if text_file or dataset:
        text, source = load_text(split=split, text_file=text_file, dataset=dataset)
        return (text,), source
    from adaptk.data.corpus import load_corpus

    name = corpus or "stdlib"
    return load_corpus(name, split, capped=False).documents, f"{name}:{split}"

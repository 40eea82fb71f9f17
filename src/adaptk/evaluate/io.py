"""Loading a model, its tokenizer and text (local or hub; lazily imported)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from adaptk.errors import AdaptkError

log = logging.getLogger(__name__)


class InputError(AdaptkError, ValueError):
    """A model, tokenizer or text that cannot be loaded."""


def default_model_path() -> str:
    try:
        from adaptk.assets import default_model_path as dmp
    except ImportError as exc:
        raise InputError("the embedded default model is not available in this build; pass --model") from exc
    path = Path(dmp())
    if not (path / "config.json").exists():
        raise InputError(f"the embedded default model is missing at {path}; pass --model")
    return str(path)


def load_model_and_tokenizer(name_or_path: str | None, dtype: str = "float32"):
    """AutoModelForCausalLM/AutoTokenizer from a local folder or a hub name (``from_pretrained``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = name_or_path or default_model_path()
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load model {path!r}: {exc}") from exc
    return model.eval(), tok, path


def encode(tokenizer, text: str) -> torch.Tensor:
    """text -> ids [L] int64 (no special tokens added)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def load_text(*, corpus: str | None = None, split: str = "test", text_file: str | None = None,
              dataset: str | None = None) -> tuple[str, str]:
    """(text, description). One of text_file / dataset / corpus."""
    if text_file:
        p = Path(text_file)
        try:
            return p.read_text(encoding="utf-8", errors="replace"), f"file:{p.name}"
        except OSError as exc:
            raise InputError(f"cannot read text file {p}: {exc.strerror or exc}") from exc
    if dataset:
        from adaptk.data.corpus import load_text as lt

        return lt(f"hf:{dataset}", split), f"hf:{dataset}:{split}"
    from adaptk.data.corpus import load_text as lt

    name = corpus or "stdlib"
    return lt(name, split), f"{name}:{split}"

"""Files shipped with adaptk: the default reference model (``mixtral-mini`` trained on the stdlib corpus)."""

from __future__ import annotations

from pathlib import Path

from adaptk.errors import AdaptkError


class AssetMissingError(AdaptkError, FileNotFoundError):
    """A shipped asset is not in this installation."""


def default_model_path() -> Path:
    """The folder of the shipped default model (``AutoModelForCausalLM.from_pretrained`` it)."""
    path = Path(__file__).resolve().parent / "default-model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise AssetMissingError(
            f"the default model is missing from {path}; reinstall adaptk, or train one with "
            "`adaptk train --preset mixtral-mini --corpus stdlib --out DIR` and pass DIR as the model"
        )
    return path

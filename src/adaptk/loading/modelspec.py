"""What a ``--model`` argument names: the shipped model, a local folder, or a hub name.

One parser for every command (evaluate, calibrate, monitor, inspect, bench):

- ``None`` or ``"default"``: the shipped default model;
- an existing local folder: that folder (it must hold ``config.json``);
- a string that looks like a path (starts with ``.``, ``/`` or ``~``, or holds a path separator
  but is not a valid ``namespace/name`` hub id) and exists nowhere: refused ("local path does
  not exist");
- otherwise a hub name (``namespace/name`` or ``name``).

Only the file system is consulted here (no network).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from adaptk.loading.errors import InputError, ModelPathError

DEFAULT = "default"
# huggingface_hub's repo id rule: [namespace/]name of letters, digits, "-", "_", "."; at most 96 chars
_HUB_ID = re.compile(r"^(?:[\w\-.]+/)?[\w\-.]+$")
_SEPARATORS = tuple(s for s in {os.sep, os.altsep, "/", "\\"} if s)


@dataclass(frozen=True)
class ModelSource:
    """``kind`` "local" (``path`` is a model folder) or "hub" (``path`` is a hub name)."""

    kind: str
    path: str
    spec: str | None  # what the user gave
    local_only: bool = False  # hub: load from the local cache only (offline, or the hub unreachable)

    @property
    def is_default(self) -> bool:
        return self.spec in (None, DEFAULT)

    def describe(self) -> str:
        return "the shipped default model" if self.is_default else self.path


def is_hub_id(spec: str) -> bool:
    """Whether ``spec`` is a syntactically valid hub repo id (``name`` or ``namespace/name``)."""
    return (len(spec) <= 96 and bool(_HUB_ID.match(spec)) and "--" not in spec and ".." not in spec
            and not spec.startswith(("-", ".")) and not spec.endswith(("-", ".")))


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` reads as a file-system path rather than a hub name."""
    if spec.startswith((".", "/", "~")) or (os.altsep and spec.startswith(os.altsep)):
        return True
    return any(s in spec for s in _SEPARATORS) and not is_hub_id(spec)


def default_model_folder() -> Path:
    try:
        from adaptk.assets import default_model_path
    except ImportError as exc:
        raise InputError("the embedded default model is not available in this build; pass --model PATH") from exc
    return Path(default_model_path())


def _model_folder(path: Path, spec: str) -> Path:
    if not path.is_dir():
        raise ModelPathError(f"--model {spec}: {path} is a file, not a model folder; pass the folder that "
                             "holds config.json and the weights")
    if not (path / "config.json").is_file():
        raise ModelPathError(f"--model {spec}: {path} is not a model folder (no config.json); pass a folder "
                             "written by save_pretrained (config.json, weights, tokenizer files)")
    return path


def resolve_model(spec: str | None) -> ModelSource:
    """Parse a ``--model`` argument (see the module docstring). Raises ``ModelPathError``."""
    if spec is None or spec == DEFAULT:
        return ModelSource("local", str(default_model_folder()), spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelPathError(f"--model must be 'default', a model folder or a hub name, got {spec!r}")
    path = Path(spec).expanduser()
    if path.exists():
        return ModelSource("local", str(_model_folder(path, spec)), spec)
    if looks_like_path(spec):
        where = f" ({path.absolute()})" if str(path.absolute()) != spec else ""
        raise ModelPathError(f"--model {spec}: local path {spec}{where} does not exist; pass an existing model folder, "
                             "'default' (the shipped model) or a hub name like namespace/name")
    if not is_hub_id(spec):
        raise ModelPathError(f"--model {spec!r} is neither an existing local folder nor a valid hub name "
                             "(namespace/name of letters, digits, '-', '_', '.'); pass a model folder or a hub name")
    return ModelSource("hub", spec, spec)

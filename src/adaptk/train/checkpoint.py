"""Training checkpoints: everything needed to continue losing nothing (weights, optimizer, step,
RNG states, routing bias, detector state, loss history)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

from adaptk.train.errors import ResumeError

CKPT_DIR = "checkpoints"
CKPT_FILE = "last.pt"


def ckpt_path(out: Path) -> Path:
    return Path(out) / CKPT_DIR / CKPT_FILE


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(d: dict) -> None:
    torch.set_rng_state(d["torch"])
    random.setstate(d["python"])


def save(out: Path, payload: dict) -> Path:
    """Write atomically (tmp file + rename) so a crash mid-save keeps the previous checkpoint."""
    path = ckpt_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load(out: Path) -> dict:
    path = ckpt_path(out)
    if not path.is_file():
        raise ResumeError(f"--resume: no checkpoint at {path}; start without --resume (add --overwrite to replace {out})")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt file
        raise ResumeError(f"--resume: cannot read {path} ({exc}); delete it and start again with --overwrite") from exc

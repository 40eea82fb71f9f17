"""Training checkpoints: everything needed to continue losing nothing (weights, optimizer, step,
RNG states, routing bias, detector state, loss history), and the run's config, so that a resume
with other values is refused (or, when allowed, recorded) instead of silently mixing two recipes.

Config checks on resume (``resume_record``):

- ``FIXED_KEYS`` (preset, steps, vocabulary size, model overrides) can never change: the saved
  weights, tokenizer and schedule depend on them;
- ``run_config``'s other entries (batch size, sequence length, lr, warm-up, weight decay, seed,
  every routing control, the training text's sha256) change the run: a change is refused unless
  ``allow_changed_config``, and then recorded as ``{"step", "changed": {key: {"checkpoint",
  "given"}}}`` in the run's ``resumed`` list (train_summary.json and the model card).

Checkpoints written before the config was stored (no ``config`` entry) are refused with a clear
message unless ``allow_changed_config`` (recorded with ``"changed": "unknown"``).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from adaptk.train.errors import ResumeError

CKPT_DIR = "checkpoints"
CKPT_FILE = "last.pt"

FIXED_KEYS = ("preset", "steps", "vocab_size", "model_overrides")
RESUMABLE_KEYS = ("batch_size", "seq_len", "lr", "warmup_steps", "weight_decay", "seed")
TEXT_KEY = "train_text_sha256"
# the command line option of each key (routing controls: "controls.x_y" -> "--x-y")
_FLAGS = {"preset": "--preset", "steps": "--steps", "vocab_size": "--vocab-size", "model_overrides": "(model overrides)",
          TEXT_KEY: "--corpus/--text-file"}


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


def run_config(cfg, texts) -> dict[str, Any]:
    """The values of ``cfg`` (a ``TrainConfig``) that shape the run, flat, plus the training
    text's sha256 (a corpus or text-file change is a change of this)."""
    d: dict[str, Any] = {k: getattr(cfg, k) for k in FIXED_KEYS + RESUMABLE_KEYS}
    d["model_overrides"] = dict(cfg.model_overrides)
    d.update({f"controls.{k}": v for k, v in asdict(cfg.controls).items()})
    d[TEXT_KEY] = texts.train.sha256
    return d


def _flag(key: str) -> str:
    if key in _FLAGS:
        return _FLAGS[key]
    return "--" + key.removeprefix("controls.").replace("_", "-")


def config_changes(saved: dict[str, Any], given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{key: {"checkpoint": old, "given": new}}`` for each key both record and that differs."""
    return {k: {"checkpoint": saved[k], "given": given[k]}
            for k in given if k in saved and saved[k] != given[k]}


def _describe(changes: dict[str, dict[str, Any]]) -> str:
    return "; ".join(f"{k} ({_flag(k)}): checkpoint {v['checkpoint']!r}, given {v['given']!r}"
                     for k, v in changes.items())


def resume_record(payload: dict, given: dict[str, Any], allow_changed: bool, where: Path) -> dict:
    """Check a checkpoint ``payload`` against the ``run_config`` of this run; return the record of
    this resume (``{"step", "changed"}``) or raise ``ResumeError`` naming each changed value."""
    step = payload.get("step")
    saved = payload.get("config")
    if saved is None:  # a checkpoint from before the config was stored: only preset and steps known
        fixed = config_changes({k: payload[k] for k in ("preset", "steps") if k in payload}, given)
        if fixed:
            raise ResumeError(f"--resume: {where} was saved with other values that cannot change: "
                              f"{_describe(fixed)}; resume with the checkpoint's values")
        if not allow_changed:
            raise ResumeError(f"--resume: {where} was written by an older adaptk and does not record its "
                              "training config, so a changed value could not be detected; pass "
                              "--allow-changed-config to continue anyway (recorded as 'unknown'), or start "
                              "again with --overwrite")
        return {"step": step, "changed": "unknown"}
    changes = config_changes(saved, given)
    fixed = {k: v for k, v in changes.items() if k in FIXED_KEYS}
    if fixed:
        raise ResumeError(f"--resume: {where} was saved with other values that cannot change on resume: "
                          f"{_describe(fixed)}; resume with the checkpoint's values, or start again with --overwrite")
    if changes and not allow_changed:
        raise ResumeError(f"--resume: the run config changed since {where} was saved (step {step}): "
                          f"{_describe(changes)}; resume with the checkpoint's values, or pass "
                          "--allow-changed-config to continue with the new ones (recorded in train_summary.json)")
    return {"step": step, "changed": changes}

"""Fingerprints: what a policy file must match (the model) and how it was found (the data)."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from adaptk.models import find_moe_layers


def model_fingerprint(model: nn.Module) -> dict:
    """Architecture class, number of MoE layers, experts per layer and native k per layer."""
    layers = find_moe_layers(model)
    return {
        "architecture": type(model).__name__,
        "num_moe_layers": len(layers),
        "num_experts": [layer.num_experts for layer in layers],
        "native_k": [layer.native_k for layer in layers],
    }


def data_fingerprint(ids: torch.Tensor) -> str:
    """sha256 of the token ids (int64, little endian) actually used."""
    return hashlib.sha256(ids.reshape(-1).to(torch.int64).numpy().astype("<i8").tobytes()).hexdigest()


def fingerprint_diff(expected: dict, actual: dict) -> list[str]:
    """Human-readable differences between a file's fingerprint and a model's."""
    out = []
    for key in ("architecture", "num_moe_layers", "num_experts", "native_k"):
        if expected.get(key) != actual.get(key):
            out.append(f"{key}: policy file has {expected.get(key)!r}, model has {actual.get(key)!r}")
    return out

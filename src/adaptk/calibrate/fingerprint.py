"""Fingerprints: what a policy file must match (the model) and how it was found (the data)."""

from __future__ import annotations

import hashlib
import logging

import torch
from torch import nn

from adaptk.models import MoELayer, find_moe_layers

log = logging.getLogger(__name__)


def model_fingerprint(model: nn.Module) -> dict:
    """Architecture class, number of MoE layers, experts per layer and native k per layer."""
    layers = find_moe_layers(model)
    return {
        "architecture": type(model).__name__,
        "num_moe_layers": len(layers),
        "num_experts": [layer.num_experts for layer in layers],
        "native_k": [layer.native_k for layer in layers],
    }


def router_tensors(layer: MoELayer) -> list[tuple[str, torch.Tensor]]:
    """The router's own weights of one MoE layer: its parameters and buffers (weight, and the
    bias or expert-score correction bias where the family has one), sorted by name."""
    named = dict(layer.router.named_parameters())
    named.update(layer.router.named_buffers())
    return sorted(named.items())


def weights_fingerprint(model: nn.Module, layers: list[MoELayer] | None = None) -> str | None:
    """sha256 over the routers' weights (and biases) of every MoE layer, in layer order, each
    tensor rounded to bfloat16 and hashed as its little-endian bytes. The rounding makes the
    same checkpoint loaded in float32 or bfloat16 one fingerprint; a fine-tune or another seed
    moves router weights by far more than bfloat16's 2^-8 relative step. Routers are small
    (N x hidden per layer), so this is cheap even for large models. None when a router's weights
    are not materialised (meta device, offloaded): the weights cannot be checked then."""
    layers = layers if layers is not None else find_moe_layers(model)
    h = hashlib.sha256()
    for layer in layers:
        for name, t in router_tensors(layer):
            if t.is_meta:
                log.info("router tensor %s.%s is on the meta device: no weights fingerprint", layer.name, name)
                return None
            bits = t.detach().to(torch.bfloat16).cpu().contiguous().view(torch.int16).numpy()  # on device, then host
            h.update(memoryview(bits.astype("<i2", copy=False)))
    return h.hexdigest()


def short(sha: str | None) -> str:
    """The first 12 hex digits of a fingerprint, for messages."""
    return sha[:12] if sha else "none"


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

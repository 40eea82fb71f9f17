"""The training-time router wrapper: an instance-level ``forward`` on each MoE router.

It computes the family's own scores (``MoEFamily.scores`` from the registry), then applies the
routing controls (input jitter, logit noise, temperature, aux-loss-free selection bias, delayed
sparsification, capacity dropping), picks the top-k, weights the kept experts by the family's
convention and records what the losses and health monitor need. ``remove()`` restores the
router's class ``forward`` exactly (the saved model is the plain transformers model).

Only softmax-gated families are supported (``mixtral``, ``qwen-moe``: the three presets), since
the controls rescale softmax logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adaptk.models import RouterScores, find_moe_layers
from adaptk.models.registry import MoELayer
from adaptk.routing.select import keep_all
from adaptk.train import controls as C
from adaptk.train.config import RoutingControls
from adaptk.train.errors import TrainConfigError

SOFTMAX_FAMILIES = ("mixtral", "qwen-moe")
_MISSING = object()


@dataclass
class Captured:
    """What one router call routed. ``raw_logits`` [T, N] (before noise / temperature), ``probs``
    [T, N] (the distribution the gate used), ``indices`` [T, K], ``keep`` [T, K]."""

    raw_logits: torch.Tensor
    probs: torch.Tensor
    indices: torch.Tensor
    keep: torch.Tensor


@dataclass
class RoutingState:
    """Mutable per-step knobs shared by all wrapped routers, plus the per-layer selection bias."""

    controls: RoutingControls
    step: int = 0
    total_steps: int = 1
    bias: list[torch.Tensor] = field(default_factory=list)  # per layer [N]
    captured: list[Captured | None] = field(default_factory=list)
    generator: torch.Generator | None = None

    def tau(self) -> float:
        c = self.controls
        return C.temperature(self.step, self.total_steps, c.temperature_start, c.temperature_end)

    def k(self, native_k: int, num_experts: int) -> int:
        c = self.controls
        return C.sparsity_k(self.step, native_k, num_experts, c.dense_steps, c.sparsify_steps)


def _wrapped(layer: MoELayer, state: RoutingState) -> Callable[..., Any]:
    router, family, index = layer.router, layer.family, layer.index
    n, native_k = layer.num_experts, layer.native_k

    def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        c = state.controls
        training = router.training
        hidden = hidden_states.reshape(-1, hidden_states.shape[-1])  # [T, H]
        if training:
            hidden = C.input_jitter(hidden, c.jitter, state.generator)
        native = family.scores(router, hidden)
        logits = native.logits.float()  # [T, N]
        tau = state.tau() if training else 1.0
        if training and (c.logit_noise > 0 or tau != 1.0):
            logits = C.logit_noise(logits, c.logit_noise, state.generator) / tau
            probs = torch.softmax(logits, dim=-1)  # [T, N]
        else:
            probs = native.probs.float()
        k = state.k(native_k, n) if training else native_k
        rank = probs + state.bias[index] if training and c.aux_free_bias_speed > 0 else probs
        cand = torch.topk(rank, k, dim=-1).indices  # [T, k]
        scores = RouterScores(native.logits, probs, rank)
        weights = family.weights(router, scores, keep_all(cand), hidden_states.dtype)  # [T, k]
        keep = torch.ones_like(cand, dtype=torch.bool)
        if training and c.capacity_factor > 0:
            cap = C.expert_capacity(cand.shape[0], k, n, c.capacity_factor)
            keep = C.capacity_keep(cand, n, cap)
            weights = weights * keep.to(weights.dtype)
        state.captured[index] = Captured(native.logits, probs, cand, keep)
        return native.logits, weights, cand

    return forward


class RouterWrapper:
    """Install the wrapper on every MoE router of ``model``; ``remove()`` undoes it."""

    def __init__(self, model: nn.Module, state: RoutingState) -> None:
        self.layers = find_moe_layers(model)
        bad = [layer.family.name for layer in self.layers if layer.family.name not in SOFTMAX_FAMILIES]
        if bad:
            raise TrainConfigError(
                f"training-time routing controls support the softmax-gated families {SOFTMAX_FAMILIES}; "
                f"this model has {sorted(set(bad))}. Train a mixtral-mini / olmoe-mini / qwen-moe-mini preset."
            )
        self.state = state
        if not state.bias:
            state.bias = [torch.zeros(layer.num_experts) for layer in self.layers]
        state.captured = [None] * len(self.layers)
        self._saved: list[tuple[nn.Module, Any]] = []
        for layer in self.layers:
            self._saved.append((layer.router, layer.router.__dict__.get("forward", _MISSING)))
            layer.router.forward = _wrapped(layer, state)

    def remove(self) -> None:
        for router, saved in reversed(self._saved):
            if saved is _MISSING:
                del router.forward
            else:
                router.forward = saved
        self._saved.clear()

    def __enter__(self) -> RouterWrapper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

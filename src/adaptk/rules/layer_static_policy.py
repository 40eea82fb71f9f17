"""``LayerFixedK``: a fixed k per MoE layer, the same for every token of that layer (no
per-token signal). The simplest competitor of adaptive routing: whole layers drop to a lower k,
which any serving engine can already run as a static configuration.

Registered with ``register_policy`` when ``adaptk.rules`` is imported, so policy files holding it load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from adaptk.errors import PolicyError
from adaptk.routing.policies.base import Policy, cached_thresholds, freeze, pick_layer, register_policy


@register_policy
@dataclass(frozen=True)
class LayerFixedK(Policy):
    """MoE layer ``i`` keeps its top ``ks[i]`` experts for every token."""

    name: ClassVar[str] = "layer_fixed_k"
    ks: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", freeze(self.ks))
        if not self.ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.ks):
            raise PolicyError(f"LayerFixedK needs one integer k >= 1 per MoE layer, got {self.ks!r}")

    def kmax(self, native_k: int | None) -> int:
        return max(self.ks)

    def per_layer_count(self) -> int | None:
        return len(self.ks)

    def constant_k(self, layer, num_experts, native_k):
        return self.ks[layer] if layer < len(self.ks) else None

    def fixed_by_design(self) -> bool:
        return True

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        k = pick_layer(self.ks, layer, "ks")
        return torch.full((probs.shape[0],), k, dtype=torch.long, device=probs.device)

    def rank_thresholds(self, layer, native_k, device):
        k, kmax = pick_layer(self.ks, layer, "ks"), max(self.ks)
        return cached_thresholds(self, (layer, device), lambda: [-math.inf] * k + [math.inf] * (kmax - k), device)

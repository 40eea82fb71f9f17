"""``FixedTopK``: the baseline, every token keeps its top k experts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from adaptk.errors import PolicyError
from adaptk.routing.policies.base import Policy, cached_thresholds, register_policy


@register_policy
@dataclass(frozen=True)
class FixedTopK(Policy):
    """The baseline: every token keeps its top ``k`` experts."""

    name: ClassVar[str] = "fixed_top_k"
    k: int

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise PolicyError(f"FixedTopK needs an integer k >= 1, got {self.k!r}")

    def kmax(self, native_k: int | None) -> int:
        return self.k

    def constant_k(self, layer, num_experts, native_k):
        return self.k

    def fixed_by_design(self) -> bool:
        return True

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        return torch.full((probs.shape[0],), self.k, dtype=torch.long, device=probs.device)

    def rank_thresholds(self, layer, native_k, device):
        return cached_thresholds(self, ("all", device), lambda: [-math.inf] * self.k, device)

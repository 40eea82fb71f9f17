"""``EntropyThreshold``: the paper's rule, k a step function of the routing entropy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from adaptk.errors import PolicyError
from adaptk.routing.entropy import entropy_nats, tempered
from adaptk.routing.policies.base import (
    LOG_N_TOL,
    Policy,
    cached_thresholds,
    check_k_values,
    freeze,
    pick_layer,
    register_policy,
)


@register_policy
@dataclass(frozen=True)
class EntropyThreshold(Policy):
    """The paper's rule (§3.3, §4): k = k_values[i] for the first i with H < thresholds[i],
    else k_values[-1].

    ``thresholds`` holds len(k_values) - 1 non-decreasing entropies in nats, or one such list
    per MoE layer. ``temperature`` τ re-tempers the distribution before the entropy is taken
    (softmax(logits / τ) for softmax routers, §2.2); the experts kept and their weights are not
    changed by τ.
    """

    name: ClassVar[str] = "entropy_threshold"
    k_values: tuple[int, ...]
    thresholds: tuple[float, ...] | tuple[tuple[float, ...], ...]
    temperature: float = 1.0
    _table: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "k_values", freeze(self.k_values))
        object.__setattr__(self, "thresholds", freeze(self.thresholds))
        kv = self.k_values
        check_k_values(kv)
        if not (isinstance(self.temperature, int | float) and self.temperature > 0):
            raise PolicyError(f"temperature must be > 0, got {self.temperature!r}")
        rows = self.thresholds if self._is_per_layer() else (self.thresholds,)
        for i, row in enumerate(rows):
            where = f" (layer {i})" if self._is_per_layer() else ""
            if len(row) != len(kv) - 1:
                raise PolicyError(
                    f"EntropyThreshold with k_values {list(kv)} needs {len(kv) - 1} thresholds"
                    f"{where}, got {len(row)}: threshold i separates k_values[i] from k_values[i+1]"
                )
            if any(not isinstance(t, int | float) or math.isnan(t) for t in row):
                raise PolicyError(f"thresholds must be numbers{where}, got {list(row)}")
            if any(b < a for a, b in zip(row, row[1:])):
                raise PolicyError(f"thresholds must be non-decreasing{where}, got {list(row)}")
            if any(t < 0 for t in row):
                raise PolicyError(
                    f"thresholds must be >= 0{where}, got {list(row)}: they are routing entropies in nats, "
                    "which are never negative (0 = all weight on one expert, log N = uniform); "
                    "use 0 to always keep the larger k"
                )

    def _is_per_layer(self) -> bool:
        return bool(self.thresholds) and isinstance(self.thresholds[0], tuple)

    @classmethod
    def from_fractions(
        cls,
        k_values: Sequence[int],
        alphas: Sequence[float],
        num_experts: int,
        temperature: float = 1.0,
    ) -> EntropyThreshold:
        """Theory-based thresholds θ_i = α_i · log N (§4.2.1)."""
        if num_experts < 2:
            raise PolicyError(f"num_experts must be >= 2, got {num_experts}")
        log_n = math.log(num_experts)
        return cls(tuple(k_values), tuple(float(a) * log_n for a in alphas), temperature)

    def kmax(self, native_k: int | None) -> int:
        return self.k_values[-1]

    def constant_k(self, layer, num_experts, native_k):
        """k = k_values[#thresholds <= H] for H in [0, log N]: constant unless a threshold lies in (0, log N]."""
        th = torch.tensor(self.layer_thresholds(layer), dtype=torch.float32).tolist()  # as routing compares them
        if not th:
            return self.k_values[0]
        if num_experts < 2:
            return None
        top = math.log(num_experts) + LOG_N_TOL
        if any(0 < t <= top for t in th):
            return None
        return self.k_values[sum(t <= 0 for t in th)]

    def fixed_by_design(self) -> bool:
        return len(self.k_values) == 1

    def _constant_hint(self, num_experts):
        return (f"Routing entropies lie in [0, log N = {math.log(num_experts):.4f}] nats, so a threshold must lie "
                f"in (0, {math.log(num_experts):.4f}] to separate tokens (got {list(self.thresholds)}): "
                "recalibrate with `adaptk calibrate`, or use FixedTopK for a fixed k")

    def warnings_for(self, num_layers, num_experts, native_k):
        out = super().warnings_for(num_layers, num_experts, native_k)
        if num_experts >= 2 and not any(m.startswith(f"{self.name} can never change k") for m in out):
            top = math.log(num_experts) + LOG_N_TOL
            rows = self.thresholds if self._is_per_layer() else (self.thresholds,)
            high = sorted({t for row in rows for t in row if t > top})
            if high:
                out.append(f"{self.name} thresholds {high} lie above log N = {math.log(num_experts):.4f} nats, "
                           f"the largest routing entropy of N={num_experts} experts: the k values past them are "
                           "never used")
        return out

    def per_layer_count(self) -> int | None:
        return len(self.thresholds) if self._is_per_layer() else None

    def layer_thresholds(self, layer: int) -> tuple[float, ...]:
        return pick_layer(self.thresholds, layer, "thresholds") if self._is_per_layer() else self.thresholds

    def rank_thresholds(self, layer, native_k, device):
        if self.temperature != 1.0:
            return None
        return cached_thresholds(self, (layer, device), lambda: self._rank_thresholds(layer), device)

    def _rank_thresholds(self, layer: int) -> list[float]:
        """Rank r is kept from the first threshold above which k > r (k_values increase)."""
        th, kv = self.layer_thresholds(layer), self.k_values
        first = [next(i for i, k in enumerate(kv) if k > r) for r in range(kv[-1])]
        return [th[i - 1] if i > 0 else -math.inf for i in first]

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        if self.temperature == 1.0 and entropy is not None:
            h = entropy  # [T], computed once by the caller
        else:
            h = entropy_nats(tempered(probs.float(), float(self.temperature)))  # [T], softmax output: unchecked
        key = (probs.device, layer)
        if key not in self._table:
            th = torch.tensor(self.layer_thresholds(layer), dtype=torch.float32, device=probs.device)
            kv = torch.tensor(self.k_values, dtype=torch.long, device=probs.device)
            self._table[key] = (th, kv)
        th, kv = self._table[key]
        # first i with H < th[i] == number of thresholds <= H (thresholds non-decreasing);
        # a NaN entropy (non-finite router output, counted by the patch) sorts last: kmax
        level = torch.bucketize(h, th, right=True)  # [T]
        return kv.index_select(0, level)  # [T]

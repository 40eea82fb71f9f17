"""``TopP``: post-hoc top-p, the fewest top-ranked experts whose probability reaches p."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from adaptk.errors import PolicyError
from adaptk.routing.policies.base import Policy, register_policy


@register_policy
@dataclass(frozen=True)
class TopP(Policy):
    """Post-hoc top-p: the smallest set of top-ranked experts whose probability reaches ``p``,
    clamped to [min_k, max_k] (max_k defaults to the model's native k)."""

    name: ClassVar[str] = "top_p"
    p: float
    min_k: int = 1
    max_k: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.p, int | float) or not 0.0 < self.p <= 1.0:
            raise PolicyError(f"TopP needs 0 < p <= 1, got {self.p!r}")
        if not isinstance(self.min_k, int) or self.min_k < 1:
            raise PolicyError(f"min_k must be an integer >= 1, got {self.min_k!r}")
        if self.max_k is not None and (not isinstance(self.max_k, int) or self.max_k < self.min_k):
            raise PolicyError(f"max_k must be an integer >= min_k={self.min_k}, got {self.max_k!r}")

    def kmax(self, native_k: int | None) -> int:
        if self.max_k is not None:
            return self.max_k
        if native_k is None:
            raise PolicyError("TopP without max_k needs the model's native k: pass max_k=")
        return max(native_k, self.min_k)

    def constant_k(self, layer, num_experts, native_k):
        kmax = self.kmax(native_k)
        return kmax if self.min_k >= kmax else None

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        cum = ranked.cumsum(dim=-1)  # [T, K]
        k = (cum < self.p).sum(dim=-1) + 1  # first prefix whose mass reaches p
        return k.clamp(self.min_k, ranked.shape[-1])

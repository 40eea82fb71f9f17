"""``RatioSkip``: ratio skipping of Lu et al. 2024, keep experts within a ratio of the top one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from adaptk.errors import PolicyError
from adaptk.routing.policies.base import Policy, freeze, pick_layer, register_policy


@register_policy
@dataclass(frozen=True)
class RatioSkip(Policy):
    """Ratio skipping of "Not All Experts are Equal" (Lu et al. 2024): keep the top expert, and
    each later one of the top max_k whose weight is at least ``beta`` times the top one's.

    ``beta`` is one number or one per MoE layer (the paper sets it per layer).
    """

    name: ClassVar[str] = "ratio_skip"
    beta: float | tuple[float, ...]
    max_k: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", freeze(self.beta))
        betas = self.beta if isinstance(self.beta, tuple) else (self.beta,)
        if not betas or any(not isinstance(b, int | float) or not 0.0 <= b <= 1.0 for b in betas):
            raise PolicyError(f"RatioSkip needs 0 <= beta <= 1 (one value or one per layer), got {self.beta!r}")
        if self.max_k is not None and (not isinstance(self.max_k, int) or self.max_k < 1):
            raise PolicyError(f"max_k must be an integer >= 1, got {self.max_k!r}")

    def kmax(self, native_k: int | None) -> int:
        if self.max_k is not None:
            return self.max_k
        if native_k is None:
            raise PolicyError("RatioSkip without max_k needs the model's native k: pass max_k=")
        return native_k

    def constant_k(self, layer, num_experts, native_k):
        """beta = 0 keeps all max_k experts; max_k = 1 keeps one."""
        kmax = self.kmax(native_k)
        if kmax == 1:
            return 1
        betas = self.beta if isinstance(self.beta, tuple) else (self.beta,) * (layer + 1)
        return kmax if layer < len(betas) and betas[layer] == 0 else None

    def per_layer_count(self) -> int | None:
        return len(self.beta) if isinstance(self.beta, tuple) else None

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        beta = float(pick_layer(self.beta, layer, "beta") if isinstance(self.beta, tuple) else self.beta)
        keep_more = ranked[:, 1:] >= beta * ranked[:, :1]  # [T, K-1]
        # keep a prefix: stop at the first expert below the ratio
        return 1 + keep_more.long().cumprod(dim=-1).sum(dim=-1)

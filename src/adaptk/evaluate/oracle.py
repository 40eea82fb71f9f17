"""``OracleShares``: the analysis-only reference for token selection at given per-layer k shares.

On each MoE layer and each forward call, every token's experts are run for all of its ranked
slots (the model's own top-K by router probability) and the damage of keeping only k of them is
measured exactly: d_k = ||y_K - y_k||, y_k the layer's weighted expert output with the first k
slots (weights renormalised over them where the family renormalises). The lowest k value then
goes to the share of tokens with the least damage, the next to the least damaged of the rest, and
so on: the same per-layer fraction of tokens at each k as the rule it is compared with, but each
token chosen knowing what dropping its slot does to that layer's output. The routing counters
count only the kept slots, but the oracle itself runs every slot, so it saves nothing: it is what
a cheap per-token signal is measured against, never a policy to serve (it is not registered for
policy files). It is greedy, one layer and one call at a time, on the layer's output rather
than on the loss, so it is a reference, not a strict bound: a rule can do better in perplexity.

The experts' outputs are computed with adaptk's own experts forward on the layer's input, which a
forward pre-hook on the router captures (``bind``); this suits the families whose ranking is the
router probabilities' top-k (Mixtral, Qwen-MoE, OLMoE and the like), the default model's among them.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from adaptk.errors import PolicyError
from adaptk.experts.variable_k import variable_k_experts_forward
from adaptk.models.registry import find_moe_layers
from adaptk.routing import Policy


def quota(shares, num_tokens: int) -> list[int]:
    """Tokens per k value in one call of ``num_tokens``: rounded cumulative shares (they sum to it)."""
    cum, total, out = 0.0, 0, []
    for s in shares:
        cum += s
        n = round(cum * num_tokens) - total
        out.append(n)
        total += n
    out[-1] += num_tokens - total
    return out


def assign_k(damage: torch.Tensor, k_values: tuple[int, ...], counts: list[int]) -> torch.Tensor:
    """damage [T, V] (the damage of keeping k_values[v] slots), counts [V] summing to T -> k [T]:
    k_values[0] for the counts[0] least damaged tokens, k_values[1] for the least damaged of the
    rest, ..., the top k value for what is left."""
    t = damage.shape[0]
    k = torch.full((t,), k_values[-1], dtype=torch.long, device=damage.device)
    free = torch.ones(t, dtype=torch.bool, device=damage.device)
    for v, n in enumerate(counts[:-1]):
        if n <= 0:
            continue
        d = damage[:, v].masked_fill(~free, float("inf"))
        pick = torch.topk(d, n, largest=False, sorted=False).indices
        k[pick] = k_values[v]
        free[pick] = False
    return k


def slot_damage(outputs: torch.Tensor, weights: torch.Tensor, k_values: tuple[int, ...],
                renormalise: bool) -> torch.Tensor:
    """outputs [K, T, H] (each ranked slot's expert output), weights [T, K] (its router probability)
    -> [T, V]: ||y_K - y_k|| for each k in k_values, y_k = Σ_{r<k} w_r E_r (/ Σ_{r<k} w_r)."""
    w = weights.float().t().unsqueeze(-1)  # [K, T, 1]
    part = torch.cumsum(w * outputs.float(), dim=0)  # [K, T, H]: Σ_{r<=j} w_r E_r
    if renormalise:
        part = part / torch.cumsum(w, dim=0).clamp_min(torch.finfo(torch.float32).tiny)
    full = part[-1]
    return torch.stack([(full - part[k - 1]).norm(dim=-1) for k in k_values], dim=1)  # [T, V]


@dataclass(frozen=True, eq=False)
class OracleShares(Policy):
    """On layer i a share ``shares[i][v]`` of each call's tokens keeps ``k_values[v]`` experts, the
    tokens whose output that k changes least (see the module). Use it inside ``bind(model)``."""

    name: ClassVar[str] = "oracle"
    k_values: tuple[int, ...]
    shares: tuple[tuple[float, ...], ...]
    _bound: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.k_values or any(b <= a for a, b in zip(self.k_values, self.k_values[1:])) or self.k_values[0] < 1:
            raise PolicyError(f"k_values must be increasing integers >= 1, got {self.k_values!r}")
        if any(len(row) != len(self.k_values) or abs(sum(row) - 1.0) > 1e-6 for row in self.shares):
            raise PolicyError(f"OracleShares needs per-layer shares of {len(self.k_values)} k values summing to 1")

    def kmax(self, native_k: int | None) -> int:
        return self.k_values[-1]

    def per_layer_count(self) -> int | None:
        return len(self.shares)

    def fixed_by_design(self) -> bool:
        return True  # analysis only: no warning about layers at one k

    @contextmanager
    def bind(self, model: nn.Module):
        """Capture every MoE layer's input while the model runs (its router's forward pre-hook)."""
        hooks = []
        try:
            for lay in find_moe_layers(model):
                weights = getattr(lay.family, "weights", None)
                renorm = getattr(weights, "renormalises", None)
                self._bound[lay.index] = {"experts": lay.experts,
                                          "renormalise": bool(renorm(lay.router)) if callable(renorm) else True}
                hooks.append(lay.router.register_forward_pre_hook(
                    lambda mod, args, i=lay.index: self._bound[i].__setitem__("x", args[0])))
            yield self
        finally:
            for h in hooks:
                h.remove()
            self._bound.clear()

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        b = self._bound.get(layer)
        if b is None or "x" not in b:
            raise PolicyError("OracleShares routes only inside `with policy.bind(model):` (it needs each MoE "
                              "layer's input)")
        x = b["x"].reshape(-1, b["x"].shape[-1])
        if x.shape[0] != probs.shape[0]:
            raise PolicyError(f"OracleShares: layer {layer} saw {x.shape[0]} inputs for {probs.shape[0]} routed "
                              "tokens; this family's router input is not the experts' input")
        kk = ranked.shape[1]
        idx = probs.topk(kk, dim=-1).indices  # [T, K]: the linear-softmax families' ranking
        ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        outs = torch.stack([variable_k_experts_forward(b["experts"], x, idx[:, r:r + 1], ones) for r in range(kk)])
        damage = slot_damage(outs, ranked, self.k_values, b["renormalise"])  # [T, V]
        return assign_k(damage, self.k_values, quota(self.shares[layer], probs.shape[0]))

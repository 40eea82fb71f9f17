"""What adaptk must know about one transformers MoE family, declared once.

A family names its router classes, where the router and the experts sit in the MoE block, and
two functions that mirror the model's own router arithmetic op for op (so that keeping the
native k reproduces the unpatched model bit for bit):

- ``scores(router, hidden [T, H]) -> RouterScores``: the logits the router returns, the full
  routing distribution over all N experts (float32, rows sum to 1, used for entropy and by
  policies) and the scores the model ranks experts by (its top-k input).
- ``candidates(rank [T, N], K) -> [T, K]`` (optional): how the model picks its top K when it is
  not one ``torch.topk`` call (``sorted_topk`` mirrors that call's ``sorted`` flag);
- ``weights(router, scores, selection, hidden_dtype) -> [T, K]``: the weights of the kept
  experts (``selection.candidates`` [T, K], ``selection.drop`` [T, K]; ``adaptk.routing.select``)
  under the model's convention (renormalised or raw, softmax over the kept logits, scaling
  factors), zero where not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

if TYPE_CHECKING:
    from adaptk.routing.select import Selection


class RouterScores(NamedTuple):
    logits: torch.Tensor  # [T, N] exactly what the native router returns first
    probs: torch.Tensor  # [T, N] float32 full routing distribution
    rank: torch.Tensor  # [T, N] what the model's top-k ranks


ScoresFn = Callable[[nn.Module, torch.Tensor], RouterScores]
WeightsFn = Callable[[nn.Module, RouterScores, "Selection", torch.dtype], torch.Tensor]


@dataclass(frozen=True)
class MoEFamily:
    """One declaration per routing convention; ``router_classes`` lists the transformers router
    classes (by class name) that follow it."""

    name: str
    router_classes: tuple[str, ...]
    scores: ScoresFn
    weights: WeightsFn
    sorted_topk: bool = True
    candidates: Callable[[torch.Tensor, int], torch.Tensor] | None = None
    router_attr: str = "gate"
    experts_attr: str = "experts"
    distribution: str = "softmax over the router logits"
    # the scores are F.linear(hidden [T, H], router.weight) and their float32 softmax (no bias, no
    # temperature): adaptk's C++ routers (adaptk.routing.fused) may compute them in one call
    linear_softmax: bool = False
    flattens_hidden: bool = True  # (linear_softmax) the scores flatten hidden to [T, H] first
    # the first transformers release whose routers of this family follow the convention above
    # (return (logits, weights, index), mirrored op for op); None: every transformers 5.x
    min_transformers: str | None = None

    def __post_init__(self) -> None:
        if not self.router_classes:
            raise ValueError(f"family {self.name!r} must name at least one router class")

    def num_experts(self, router: nn.Module) -> int:
        return int(router.num_experts)

    def native_k(self, router: nn.Module) -> int:
        return int(router.top_k)

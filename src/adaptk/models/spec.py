"""What adaptk must know about one transformers MoE family, declared once.

A family names its router classes, where the router and the experts sit in the MoE block, and
two functions that mirror the model's own router arithmetic op for op (so that keeping the
native k reproduces the unpatched model bit for bit):

- ``scores(router, hidden [T, H]) -> RouterScores``: the logits the router returns, the full
  routing distribution over all N experts (float32, rows sum to 1, used for entropy and by
  policies) and the scores the model ranks experts by (its top-k input).
- ``candidates(rank [T, N], K) -> [T, K]`` (optional): how the model picks its top K when it is
  not one ``torch.topk`` call (``sorted_topk`` mirrors that call's ``sorted`` flag);
- ``fast_path`` (optional, ``FastPath``): the data adaptk's C routers need to route the family
  with the same bits;
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
class FastPath:
    """A family's promise that adaptk's C routers (``adaptk.routing.fused``) compute its routing
    with its own bits: experts ranked by the float32 softmax probabilities with one sorted
    ``torch.topk``, the kept experts weighted by those probabilities, renormalised or not, in a
    fixed output dtype. Engine back-ends read only this, never the family's functions."""

    renormalise: bool | None  # divide the kept weights by their sum; None: per router, its norm_topk_prob
    out: str  # the weights' dtype: "float32", the logits' ("logits") or the hidden states' ("hidden")
    # the scores are F.linear(hidden, router.weight) and their float32 softmax (no bias, no
    # temperature): the whole router call may run in C++, not only the step after the scores
    linear_softmax: bool = False
    flattens_hidden: bool = True  # (linear_softmax) the scores flatten hidden to [T, H] first

    def __post_init__(self) -> None:
        if self.out not in ("float32", "logits", "hidden"):
            raise ValueError(f"out must be 'float32', 'logits' or 'hidden', got {self.out!r}")

    def renormalises(self, router: nn.Module) -> bool:
        return bool(self.renormalise if self.renormalise is not None else router.norm_topk_prob)

    def cast(self, w: torch.Tensor, logits_dtype: torch.dtype, hidden_dtype: torch.dtype) -> torch.Tensor:
        dtype = logits_dtype if self.out == "logits" else hidden_dtype if self.out == "hidden" else torch.float32
        return w if w.dtype is dtype else w.to(dtype)  # no op where it is already: one less dispatch


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
    router_attr: str = "gate"  # the MoE block's attribute holding the router
    experts_attr: str = "experts"
    fast_path: FastPath | None = None  # None: the torch ops route every call
    # the first transformers release whose routers of this family follow the convention above
    # (return (logits, weights, index), mirrored op for op); None: every transformers 5.x
    min_transformers: str | None = None

    def __post_init__(self) -> None:
        if not self.router_classes:
            raise ValueError(f"family {self.name!r} must name at least one router class")
        if self.fast_path is not None and (not self.sorted_topk or self.candidates is not None):
            raise ValueError(f"family {self.name!r}: a fast path needs one sorted torch.topk "
                             "(sorted_topk=True, candidates=None)")

    def num_experts(self, router: nn.Module) -> int:
        return int(router.num_experts)

    def native_k(self, router: nn.Module) -> int:
        return int(router.top_k)

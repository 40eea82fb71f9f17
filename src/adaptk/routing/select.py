"""From a policy's k per token to the kept experts, in the model's own ranking order.

Shapes: T tokens, N experts, K = the policy's kmax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

from adaptk.errors import PolicyError
from adaptk.routing.entropy import routing_entropy

if TYPE_CHECKING:
    from adaptk.routing.policies import Policy


_ARANGE: dict[tuple[int, torch.device], torch.Tensor] = {}


def _arange(n: int, device: torch.device) -> torch.Tensor:
    """[n] int64 0..n-1, cached per device (the router runs once per layer per step)."""
    key = (n, device)
    if key not in _ARANGE:
        _ARANGE[key] = torch.arange(n, device=device)
    return _ARANGE[key]


class RoutingDecision(NamedTuple):
    """Per token: kept experts (sentinel N in dropped slots), their weights, k and entropy."""

    indices: torch.Tensor  # [T, K] int64
    weights: torch.Tensor  # [T, K]
    k: torch.Tensor  # [T] int64
    entropy: torch.Tensor  # [T] float32, nats, of the router's full distribution


class Selection(NamedTuple):
    """What ``decide`` returns: candidate slots in the model's native slot order."""

    indices: torch.Tensor  # [T, K] int64, sentinel N where not kept
    candidates: torch.Tensor  # [T, K] int64, the top-K experts by rank score (none dropped)
    keep: torch.Tensor  # [T, K] bool
    k: torch.Tensor  # [T] int64
    entropy: torch.Tensor  # [T] float32


def decide(
    policy: Policy,
    probs: torch.Tensor,
    rank_scores: torch.Tensor,
    *,
    layer: int,
    native_k: int | None,
    sorted_topk: bool,
    candidates: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> Selection:
    """Apply ``policy`` to one layer's router output.

    probs [T, N] float32: the full routing distribution (rows sum to 1), used for entropy and by
    the policy. rank_scores [T, N]: the scores the model ranks experts by (its own top-k input,
    with group limits and biases applied). ``sorted_topk`` mirrors the model's own ``topk`` call so
    that, when nothing is dropped, slots come out in exactly the model's order; ``candidates``
    replaces that ``topk`` call for models that pick experts another way (rank [T, N], K -> [T, K]).
    """
    t, n = probs.shape
    kmax = policy.kmax(native_k)
    if kmax > n:
        raise PolicyError(f"policy keeps up to {kmax} experts but the layer has {n}")
    top_vals = None
    if candidates is None:
        top_vals, cand = torch.topk(rank_scores, kmax, dim=-1, sorted=sorted_topk)  # [T, K]
    else:
        cand = candidates(rank_scores, kmax)  # [T, K]
    if sorted_topk:
        rank_order = cand
        position = _arange(kmax, cand.device)  # [K], broadcast over tokens
    else:
        cand_scores = rank_scores.gather(1, cand)  # [T, K]
        order = torch.sort(cand_scores, dim=-1, descending=True, stable=True).indices  # [T, K]
        rank_order = cand.gather(1, order)  # [T, K] best first
        position = torch.empty_like(order).scatter_(
            1, order, torch.arange(kmax, device=cand.device).expand(t, kmax)
        )  # [T, K] rank of each native slot
    if sorted_topk and top_vals is not None and rank_scores is probs:
        ranked = top_vals  # the probabilities of the candidates, best first: no second gather
    else:
        ranked = probs.gather(1, rank_order)  # [T, K]
    entropy = routing_entropy(probs)  # [T]
    k = policy.choose_k(probs, ranked, layer, native_k, entropy=entropy).clamp(1, kmax)  # [T]
    keep = position < k.unsqueeze(-1)  # [T, K]
    indices = torch.where(keep, cand, n)
    return Selection(indices, cand, keep, k, entropy)

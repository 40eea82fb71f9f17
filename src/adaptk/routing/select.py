"""From a policy's k per token to the kept experts, in the model's own ranking order.

Shapes: T tokens, N experts, K = the policy's kmax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

from adaptk.errors import PolicyError
from adaptk.routing.entropy import entropy_nats


class KPolicy(Protocol):
    """What ``decide`` needs of a policy (``adaptk.routing.policies.Policy`` has it): declared here
    so that this module does not import the policies, which import it."""

    def kmax(self, native_k: int | None) -> int: ...

    def rank_thresholds(self, layer: int, native_k: int | None, device: torch.device) -> torch.Tensor | None: ...

    def choose_k(self, probs: torch.Tensor, ranked: torch.Tensor, layer: int, native_k: int | None,
                 entropy: torch.Tensor | None = None) -> torch.Tensor: ...


_ARANGE: dict[tuple[int, torch.device], torch.Tensor] = {}
_CONST: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}


def _arange(n: int, device: torch.device) -> torch.Tensor:
    """[n] int64 0..n-1, cached per device (the router runs once per layer per step)."""
    key = (n, device)
    if key not in _ARANGE:
        _ARANGE[key] = torch.arange(n, device=device)
    return _ARANGE[key]


def filled(values: torch.Tensor, drop: torch.Tensor, fill: float) -> torch.Tensor:
    """``values.masked_fill(drop, fill)`` as one ``where`` against a cached 0-dim tensor (no
    clone, no scalar tensor made per call: the router runs once per layer per step)."""
    key = (fill, values.dtype, values.device)
    if key not in _CONST:
        _CONST[key] = torch.tensor(fill, dtype=values.dtype, device=values.device)
    return torch.where(drop, _CONST[key], values)


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
    drop: torch.Tensor  # [T, K] bool, True where the slot is not kept
    entropy: torch.Tensor  # [T] float32
    chosen_k: torch.Tensor | None  # [T] int64 as the policy chose it; None: read it off ``drop``
    top_probs: torch.Tensor | None  # [T, K] probabilities of the candidates, if the ranking had them

    @property
    def keep(self) -> torch.Tensor:
        """[T, K] bool, True where the slot is kept."""
        return ~self.drop

    @property
    def k(self) -> torch.Tensor:
        """[T] int64: experts kept per token."""
        if self.chosen_k is not None:
            return self.chosen_k
        return self.drop.shape[-1] - self.drop.sum(dim=-1)


def keep_all(candidates: torch.Tensor, entropy: torch.Tensor | None = None) -> Selection:
    """A selection keeping every candidate [T, K] (nothing dropped), for callers that route with
    the native k and want a family's weights (``entropy``, if not given, is left empty)."""
    drop = torch.zeros_like(candidates, dtype=torch.bool)  # [T, K]
    ent = entropy if entropy is not None else candidates.new_empty(0, dtype=torch.float32)
    return Selection(candidates, candidates, drop, ent, None, None)


def decide(
    policy: KPolicy,
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
        order = None  # the candidates are best first already
        position = _arange(kmax, cand.device)  # [K], broadcast over tokens
    else:
        cand_scores = rank_scores.gather(1, cand)  # [T, K]
        order = torch.sort(cand_scores, dim=-1, descending=True, stable=True).indices  # [T, K]
        position = torch.empty_like(order).scatter_(
            1, order, _arange(kmax, cand.device).expand(t, kmax)
        )  # [T, K] rank of each native slot
    top_probs = top_vals if sorted_topk and top_vals is not None and rank_scores is probs else None
    entropy = entropy_nats(probs)  # [T]
    tau = policy.rank_thresholds(layer, native_k, probs.device)
    if tau is not None:  # k is a step function of the entropy: one comparison builds the mask
        # slot at rank r is dropped iff H < tau[r]; a NaN entropy drops nothing (kmax)
        drop = entropy.unsqueeze(-1) < (tau if sorted_topk else tau[position])  # [T, K]
        chosen_k = None
    else:
        # the probabilities of the candidates, best first (no second gather if topk gave them)
        if top_probs is not None:
            ranked = top_probs
        else:
            rank_order = cand if order is None else cand.gather(1, order)  # [T, K] best first
            ranked = probs.gather(1, rank_order)  # [T, K]
        chosen_k = policy.choose_k(probs, ranked, layer, native_k, entropy=entropy).clamp(1, kmax)  # [T]
        drop = position >= chosen_k.unsqueeze(-1)  # [T, K]
    indices = filled(cand, drop, n)  # [T, K]
    return Selection(indices, cand, drop, entropy, chosen_k, top_probs)

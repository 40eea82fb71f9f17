"""A policy's k applied to vLLM's softmax top-k routing (engine-free: torch only).

vLLM's CPU router for a softmax MoE (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) ranks experts by
``torch.topk(router_logits, top_k, sorted=False)`` and weights the chosen ones by a softmax
over their logits (``renormalize``) or by their share of the full softmax (``exp(logit -
logsumexp)``). ``route`` keeps that ranking and weighting op for op and lets the policy decide
only how many slots each token keeps (``adaptk.routing.decide``, the code the transformers
engine routes with): with nothing dropped its weights and ids are vLLM's own bits. Dropped
slots get id -1 (``pairs.DROPPED``) and weight 0.

Shapes: T tokens, N experts, K = the policy's kmax.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from adaptk.engines.vllm.pairs import DROPPED
from adaptk.routing.entropy import entropy_nats
from adaptk.routing.policies import Policy
from adaptk.routing.select import Selection, decide, filled, keep_all


class Routed(NamedTuple):
    weights: torch.Tensor  # [T, K] float32, 0 where dropped
    ids: torch.Tensor  # [T, K] int32, DROPPED where not kept
    selection: Selection  # the candidates, the dropped slots and the entropy (for the statistics)


def topk_weights(logits: torch.Tensor, cand: torch.Tensor, drop: torch.Tensor, renormalize: bool) -> torch.Tensor:
    """vLLM's CPU softmax top-k weights of the candidates cand [T, K], zero where drop [T, K]."""
    vals = logits.gather(1, cand)  # [T, K] = torch.topk's values (the same elements)
    if renormalize:
        w = torch.softmax(filled(vals, drop, float("-inf")), dim=-1)  # softmax over the kept
    else:
        w = filled((vals - torch.logsumexp(logits, dim=-1, keepdim=True)).exp(), drop, 0.0)
    return w.to(torch.float32)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The full routing distribution [T, N] float32 the entropy and the policy read."""
    return torch.softmax(logits.float(), dim=-1)


def route(policy: Policy | None, logits: torch.Tensor, *, layer: int, native_k: int,
          renormalize: bool) -> Routed:
    """Route router logits [T, N] with ``policy`` (None: vLLM's native top-k, only measured)."""
    probs = probabilities(logits)  # [T, N]
    if policy is None:
        cand = torch.topk(logits, native_k, dim=-1, sorted=False)[1]  # [T, K] vLLM's own call
        sel = keep_all(cand, entropy=entropy_nats(probs))
    else:
        sel = decide(policy, probs, logits, layer=layer, native_k=native_k, sorted_topk=False)
    w = topk_weights(logits, sel.candidates, sel.drop, renormalize)
    ids = filled(sel.candidates, sel.drop, DROPPED).to(torch.int32)
    return Routed(w, ids, sel)


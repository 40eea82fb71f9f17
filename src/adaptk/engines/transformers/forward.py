"""The patched router's forward: the back-ends' routers in turn, else the model's scores, the
policy's k and the model's weighting with the torch ops (dropped slots: sentinel N, weight 0)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from adaptk.engines.transformers import backends
from adaptk.errors import RoutingInputError
from adaptk.models.registry import MoELayer
from adaptk.routing.policies import Policy
from adaptk.routing.select import decide
from adaptk.routing.stats import LayerStats


def _check_finite(logits: torch.Tensor, index: int, name: str) -> None:
    """The eager NaN/Inf check: one reduction and one host read; the per-token count only on failure."""
    total = logits.sum() if logits.dtype == torch.float32 else logits.sum(dtype=torch.float32)
    if not math.isfinite(total.item()):
        bad = ~torch.isfinite(logits).all(dim=-1)  # [T]
        if bool(bad.any()):
            raise RoutingInputError(
                f"MoE layer {index} ({name}): router logits hold NaN or Inf for {int(bad.sum())} of "
                f"{bad.shape[0]} tokens; adaptk will not route them. Check the weights and inputs "
                "(fp16 overflow is a common cause: try bfloat16 or float32)."
            )


def routed_forward(layer: MoELayer, policy: Policy, stats: LayerStats | None, check: str,
                   routing: str = "fused") -> Callable[..., Any]:
    router, family = layer.router, layer.family
    native_k, index, name = layer.native_k, layer.index, layer.name
    routes, step = backends.build(layer, policy, stats, check, routing)

    def scored(hidden_states: torch.Tensor):
        """The model's own scores, then the fused step or the torch ops (same bits): (logits, selection, weights)."""
        scores = family.scores(router, hidden_states)
        done = step(scores, hidden_states.dtype) if step is not None else None
        if done is not None:
            return scores.logits, *done
        if check == "eager":
            _check_finite(scores.logits, index, name)
        sel = decide(policy, scores.probs, scores.rank, layer=index, native_k=native_k,
                     sorted_topk=family.sorted_topk, candidates=family.candidates)
        return scores.logits, sel, family.weights(router, scores, sel, hidden_states.dtype)

    def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        for route in routes:  # each counts its tokens in the statistics; the weight read per call (moved, cast)
            done = route(hidden_states, router.weight)
            if done is not None:
                return done
        logits, sel, weights = scored(hidden_states)
        if stats is not None:  # deferred: the logits' NaN/Inf tokens are counted on the device at the fold
            stats.update(sel.entropy, sel.candidates, sel.drop, logits if check == "deferred" else None)
        return logits, weights, sel.indices

    return forward

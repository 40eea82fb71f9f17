"""``layer_static``: the control with no per-token signal. Each MoE layer runs a fixed k
(``LayerFixedK``); whole layers drop to lower k values, the least quality-sensitive layers first
(the sweep's measured per-layer sensitivity; without it, the layers with the highest mean routing
entropy), as many steps as bring the average k closest to the target. Whole layers move k in
steps of (k step)/(number of layers), so the achieved average k is reported next to the target."""

from __future__ import annotations

from collections.abc import Sequence

from adaptk.rules.base import FitInputs, Rule, SweepEntry
from adaptk.rules.layer_static_policy import LayerFixedK
from adaptk.rules.registry import register_rule


def drop_order(f: FitInputs) -> list[int]:
    """Layers in the order they give up experts: highest sensitivity weight (least sensitive) first,
    or, without weights, highest mean routing entropy first; ties by layer index."""
    if f.weights is not None:
        score = [float(w) for w in f.weights]
    else:
        score = [float(lay.entropy.double().mean()) for lay in f.stats.layers]
    return sorted(range(len(score)), key=lambda i: (-score[i], i))


def layer_ks(order: Sequence[int], k_values: Sequence[int], target: float) -> list[int]:
    """Per-layer k: starting from the top k value everywhere, each layer in ``order`` is lowered one
    k value at a time down to the lowest, and the prefix of these steps whose mean k is closest
    to ``target`` is taken (the higher k on a tie)."""
    kv = sorted(k_values)
    ks = [kv[-1]] * len(order)
    best, best_err = list(ks), abs(kv[-1] - target)
    for lay in order:
        for k in reversed(kv[:-1]):
            ks[lay] = k
            err = abs(sum(ks) / len(ks) - target)
            if err < best_err - 1e-12:
                best, best_err = list(ks), err
    return best


def layer_static_for_avg_k(f: FitInputs, target: float) -> LayerFixedK:
    return LayerFixedK(tuple(layer_ks(drop_order(f), f.k_values, target)))


RULE = register_rule(Rule(
    name="layer_static",
    policy=LayerFixedK,
    fit=layer_static_for_avg_k,
    needs_target=True,
    target_range=lambda kv, native: (kv[0], kv[-1]),
    sweep=(SweepEntry("layer_static", layer_static_for_avg_k),),
))

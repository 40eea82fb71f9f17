"""``random``: the control for token selection. Each layer runs the same share of its tokens at
each k as the entropy rule fitted to the target would (its per-layer k distribution on the
calibration statistics), but the tokens are picked by a seeded draw (``RandomShares``), not by
their routing entropy."""

from adaptk.calibrate.simulate import layer_k
from adaptk.calibrate.strategies import entropy_for_avg_k
from adaptk.rules.base import FitInputs, Rule, SweepEntry
from adaptk.rules.random_policy import RandomShares
from adaptk.rules.registry import register_rule


def random_for_avg_k(f: FitInputs, target: float, seed: int = 0) -> RandomShares:
    """Per-layer shares of the k values as the entropy rule for ``target`` gives them on ``f.stats``
    (global thresholds, or per layer with ``f.per_layer``): the same average k, drawn at random."""
    entropy = entropy_for_avg_k(f.stats, f.k_values, target, per_layer=f.per_layer)
    rows = []
    for lay in f.stats.layers:
        k = layer_k(entropy, lay)  # [T]
        rows.append(tuple(float((k == kv).sum()) / k.numel() for kv in f.k_values))
    return RandomShares(f.k_values, tuple(rows), seed)


RULE = register_rule(Rule(
    name="random",
    policy=RandomShares,
    fit=random_for_avg_k,
    needs_target=True,
    target_range=lambda kv, native: (kv[0], kv[-1]),
    sweep=(SweepEntry("random", random_for_avg_k, default=False),),
))

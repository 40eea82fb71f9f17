"""What a policy would do on recorded routing, without running the model.

Only the routing of the recorded (unpatched) run is used, so layers after a changed one see
the original hidden states; the patched run can therefore differ slightly, which is why every
fit is verified by a real patched run (``adaptk.calibrate.match``).
"""

from __future__ import annotations

import torch

from adaptk.calibrate.collect import LayerRouting, RouterStats
from adaptk.calibrate.errors import CalibrationError
from adaptk.routing import EntropyThreshold, Policy


def layer_k(policy: Policy, layer: LayerRouting) -> torch.Tensor:
    """k per recorded token of one layer -> [T] int64."""
    kmax = policy.kmax(layer.native_k)
    if kmax > layer.ranked.shape[1]:
        raise CalibrationError(f"policy keeps up to {kmax} experts; only {layer.ranked.shape[1]} were recorded")
    if isinstance(policy, EntropyThreshold) and policy.temperature != 1.0:
        raise CalibrationError("calibration simulates temperature 1 only")
    ranked = layer.ranked[:, :kmax]  # [T, K] (the recorded top probabilities, not all N)
    # the recorded full-distribution entropy stands in for the one the patched router computes
    return policy.choose_k(ranked, ranked, layer.index, layer.native_k, entropy=layer.entropy).clamp(1, kmax)


def simulated_avg_k(policy: Policy, stats: RouterStats) -> float:
    """Token-weighted average k over all layers."""
    total = sum(float(layer_k(policy, lay).float().sum()) for lay in stats.layers)
    return total / sum(lay.entropy.shape[0] for lay in stats.layers)


def simulated_layer_avg_k(policy: Policy, stats: RouterStats) -> list[float]:
    return [float(layer_k(policy, lay).float().mean()) for lay in stats.layers]

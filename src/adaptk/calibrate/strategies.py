"""Fit each routing rule's parameters from recorded router statistics (no forward pass).

Shapes: per layer, entropy [T] and ranked probs [T, Kc] (see ``collect``).

- ``theory``: θ_i = α_i · log N (paper §4.2.1).
- ``percentile_distribution``: thresholds at entropy percentiles so that a target share of
  tokens gets each k (paper §4.2.2), pooled over layers (global) or per layer.
- ``entropy_for_avg_k``: the same for a target average k.
- ``top_p_for_avg_k``, ``ratio_skip_for_avg_k``: bisection on p / β for a target average k.
- ``ratio_skip_median``: Lu et al. 2024's rule, β per layer = median of w2/w1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from adaptk.calibrate.collect import RouterStats
from adaptk.calibrate.errors import BudgetNotMetError, CalibrationError
from adaptk.calibrate.search import bisect
from adaptk.calibrate.simulate import simulated_avg_k
from adaptk.routing import EntropyThreshold, Policy, RatioSkip, TopP


def default_k_values(stats: RouterStats) -> tuple[int, ...]:
    return tuple(range(1, min(stats.native_k) + 1))


def _check_k_values(k_values: Sequence[int]) -> tuple[int, ...]:
    kv = tuple(int(k) for k in k_values)
    if len(kv) < 2:
        raise CalibrationError(f"entropy rules need at least two k values, got {list(kv)}")
    return kv


def _check_target(target: float, lo: float, hi: float, what: str) -> None:
    if not (lo - 1e-9 <= target <= hi + 1e-9):
        raise BudgetNotMetError(f"target average k {target:g} is outside what {what} can reach "
                                f"([{lo:g}, {hi:g}]); the closest reachable is {min(max(target, lo), hi):g}",
                                best=min(max(target, lo), hi))


def theory(stats: RouterStats, k_values: Sequence[int], alphas: Sequence[float]) -> EntropyThreshold:
    """θ_i = α_i log N; per layer when layers have different N."""
    kv = _check_k_values(k_values)
    ns = [lay.num_experts for lay in stats.layers]
    if len(set(ns)) == 1:
        return EntropyThreshold.from_fractions(kv, alphas, ns[0])
    return EntropyThreshold(kv, tuple(tuple(a * math.log(n) for a in alphas) for n in ns))


def _quantile(x: torch.Tensor, q: float) -> float:
    """A threshold with exactly round(q·T) of the values below it (midpoint between neighbours)."""
    xs = torch.sort(x.double()).values
    n = xs.numel()
    lo = int(round(q * n))
    if lo <= 0:
        return float(xs[0]) - 1e-6
    if lo >= n:
        return float(xs[-1]) + 1e-6
    a, b = float(xs[lo - 1]), float(xs[lo])
    if a < b:
        return 0.5 * (a + b)
    # ties at the quantile: put the tied block below or above, whichever is closer to q
    below = int(torch.searchsorted(xs, torch.tensor([b], dtype=xs.dtype), right=False))
    upto = int(torch.searchsorted(xs, torch.tensor([b], dtype=xs.dtype), right=True))
    return b if lo - below <= upto - lo else math.nextafter(b, math.inf)


def _thresholds_for_shares(h: torch.Tensor, shares: Sequence[float]) -> tuple[float, ...]:
    """shares[i] = fraction of tokens at k_values[i] (lowest entropy -> smallest k)."""
    cum, out = 0.0, []
    for s in shares[:-1]:
        cum += s
        out.append(max(_quantile(h, cum), 0.0))  # entropies are >= 0: 0 already keeps every token above
    for i in range(1, len(out)):  # keep non-decreasing under float noise
        out[i] = max(out[i], out[i - 1])
    return tuple(out)


def percentile_distribution(stats: RouterStats, k_values: Sequence[int], shares: Sequence[float],
                            per_layer: bool = False) -> EntropyThreshold:
    kv = _check_k_values(k_values)
    if len(shares) != len(kv) or any(s < 0 for s in shares) or abs(sum(shares) - 1) > 1e-6:
        raise CalibrationError(f"target distribution needs {len(kv)} non-negative shares summing to 1, got {list(shares)}")
    if per_layer:
        return EntropyThreshold(kv, tuple(_thresholds_for_shares(lay.entropy, shares) for lay in stats.layers))
    return EntropyThreshold(kv, _thresholds_for_shares(stats.pooled_entropy(), shares))


def _tilted_shares(kv: tuple[int, ...], lam: float) -> list[float]:
    """shares_i ∝ exp(λ·(k_i - k_0)/(k_max - k_0)): the maximum-entropy k distribution with a given mean."""
    span = kv[-1] - kv[0]
    w = [math.exp(max(min(lam * (k - kv[0]) / span, 700.0), -700.0)) for k in kv]
    z = sum(w)
    return [x / z for x in w]


def _avg_k_of_shares(kv, shares) -> float:
    return sum(k * s for k, s in zip(kv, shares))


def shares_for_avg_k(k_values: Sequence[int], target: float) -> list[float]:
    """The maximum-entropy distribution over ``k_values`` with mean ``target`` (exponential tilt);
    with two k values it is the only one."""
    kv = _check_k_values(k_values)
    _check_target(target, kv[0], kv[-1], f"k values {list(kv)}")
    if target <= kv[0]:
        return [1.0] + [0.0] * (len(kv) - 1)
    if target >= kv[-1]:
        return [0.0] * (len(kv) - 1) + [1.0]
    lam = bisect(lambda x: _avg_k_of_shares(kv, _tilted_shares(kv, x)), -60.0, 60.0, target,
                 increasing=True, iters=80, tol=1e-9)
    return _tilted_shares(kv, lam)


def entropy_for_avg_k(stats: RouterStats, k_values: Sequence[int], target: float | Sequence[float],
                      per_layer: bool = False) -> EntropyThreshold:
    """Percentile thresholds whose k distribution has average ``target`` (one or one per layer)."""
    kv = _check_k_values(k_values)
    if per_layer:
        targets = [float(target)] * len(stats.layers) if isinstance(target, int | float) else list(target)
        rows = tuple(_thresholds_for_shares(lay.entropy, shares_for_avg_k(kv, t))
                     for lay, t in zip(stats.layers, targets))
        return EntropyThreshold(kv, rows)
    return percentile_distribution(stats, kv, shares_for_avg_k(kv, float(target)))


def top_p_for_avg_k(stats: RouterStats, target: float, max_k: int | None = None) -> TopP:
    kmax = max_k or min(stats.native_k)
    _check_target(target, 1, kmax, f"top-p with max_k={kmax}")
    p = bisect(lambda p: simulated_avg_k(TopP(p, 1, kmax), stats), 1e-6, 1.0, target, increasing=True)
    return TopP(round(p, 8) or 1e-6, 1, kmax)


def ratio_skip_for_avg_k(stats: RouterStats, target: float, per_layer: bool = False,
                         max_k: int | None = None) -> RatioSkip:
    kmax = max_k or min(stats.native_k)
    _check_target(target, 1, kmax, f"ratio-skip with max_k={kmax}")
    if not per_layer:
        b = bisect(lambda b: simulated_avg_k(RatioSkip(b, kmax), stats), 0.0, 1.0, target, increasing=False)
        return RatioSkip(b, kmax)
    betas = []
    for lay in stats.layers:
        one = RouterStats([lay], lay.entropy.shape[0])
        betas.append(bisect(lambda b, one=one: simulated_avg_k(RatioSkip(b, kmax), one), 0.0, 1.0, target,
                            increasing=False))
    return RatioSkip(tuple(betas), kmax)


def ratio_skip_median(stats: RouterStats, max_k: int | None = None) -> RatioSkip:
    """β per layer = median of w2/w1 on the calibration data (Lu et al. 2024)."""
    kmax = max_k or min(stats.native_k)
    betas = tuple(float(torch.median(lay.ranked[:, 1] / lay.ranked[:, 0].clamp_min(1e-12)))
                  for lay in stats.layers)
    return RatioSkip(betas, kmax)


def describe(policy: Policy) -> str:
    d = policy.to_dict()
    return ", ".join(f"{k}={v}" for k, v in d.items())

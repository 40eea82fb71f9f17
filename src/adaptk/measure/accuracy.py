"""Intervals on an accuracy and on a paired accuracy difference: pure functions over per-item
correctness (1 = right). The unit is the item (items are separate sentences or lines).

- ``accuracy_interval``: the Wilson score interval of a binomial proportion.
- ``accuracy_difference``: ``mean(a) - mean(b)`` of two runs on the SAME items, paired:
  ``bootstrap`` resamples items (the same seeded draws as ``adaptk.measure.intervals``),
  ``block_se`` is the normal interval of the mean paired difference (its standard error
  ``sd(a_i - b_i) / sqrt(n)``). Both methods of ``IntervalConfig``; estimates are absolute
  (0.02 = 2 percentage points).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch

from adaptk.measure.intervals import Interval, IntervalConfig, IntervalError, resample_indices


def _as_array(x) -> np.ndarray:
    a = x.double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    return a.reshape(-1)


def accuracy_interval(correct, level: float = 0.95) -> Interval:
    """The share of ``correct`` [n] (bools or 0/1) with its Wilson score interval."""
    a = _as_array(correct)
    n = len(a)
    if n < 1:
        raise IntervalError("an accuracy needs at least 1 item; build more items")
    p = float(a.mean())
    z = NormalDist().inv_cdf(0.5 + level / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level, "wilson", n)


def accuracy_difference(a_correct, b_correct, cfg: IntervalConfig | None = None) -> Interval:
    """``accuracy(a) - accuracy(b)`` over the same items [n], with its paired interval."""
    cfg = cfg or IntervalConfig()
    a, b = _as_array(a_correct), _as_array(b_correct)
    if a.shape != b.shape:
        raise IntervalError(f"runs a and b score {len(a)} and {len(b)} items; pair runs of the same items")
    n = len(a)
    if n < 2:
        raise IntervalError(f"a paired interval needs at least 2 items, got {n}; build more items")
    d = a - b
    est = float(d.mean())
    if cfg.method == "bootstrap":
        means = d[resample_indices(n, cfg.n_boot, cfg.seed)].mean(1)
        q = (1 - cfg.level) / 2
        lo, hi = (float(v) for v in np.quantile(means, [q, 1 - q]))
    else:
        z = NormalDist().inv_cdf(0.5 + cfg.level / 2)
        se = float(d.std(ddof=1)) / math.sqrt(n)
        lo, hi = est - z * se, est + z * se
    return Interval(est, lo, hi, cfg.level, cfg.method, n)

"""Intervals on an accuracy and on a paired accuracy difference: pure functions over per-item
correctness (1 = right). The unit is the item (items are separate sentences or lines).

- ``accuracy_interval``: the Wilson score interval of a binomial proportion.
- ``accuracy_difference``: ``mean(a) - mean(b)`` of two runs on the SAME items, Newcombe's paired
  score interval (method 10). Only the discordant items (right in one run, wrong in the other)
  move the difference; a bootstrap over items is unreliable when they are few (a handful of
  items decide it), the score interval is not. Estimates are absolute (0.02 = 2 percentage points).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch

from adaptk.measure.intervals import Interval, IntervalError


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


def accuracy_difference(a_correct, b_correct, level: float = 0.95) -> Interval:
    """``accuracy(a) - accuracy(b)`` over the same items [n], with Newcombe's paired score interval
    (Stat. Med. 17:2635, 1998, method 10): the two Wilson intervals combined through the
    correlation ``phi`` of the 2x2 table of (a right, b right) counts."""
    a, b = _as_array(a_correct) > 0.5, _as_array(b_correct) > 0.5
    if a.shape != b.shape:
        raise IntervalError(f"runs a and b score {len(a)} and {len(b)} items; pair runs of the same items")
    n = len(a)
    if n < 2:
        raise IntervalError(f"a paired interval needs at least 2 items, got {n}; build more items")
    both, only_a, only_b = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    neither = n - both - only_a - only_b
    ia, ib = accuracy_interval(a, level), accuracy_interval(b, level)
    den = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(den) if den else 0.0
    pa, pb = ia.estimate, ib.estimate
    est = pa - pb
    down = math.sqrt(max(0.0, (pa - ia.lo) ** 2 - 2 * phi * (pa - ia.lo) * (ib.hi - pb) + (ib.hi - pb) ** 2))
    up = math.sqrt(max(0.0, (ia.hi - pa) ** 2 - 2 * phi * (ia.hi - pa) * (pb - ib.lo) + (pb - ib.lo) ** 2))
    return Interval(est, est - down, est + up, level, "newcombe", n)


def mcnemar(a_correct, b_correct) -> dict:
    """The exact McNemar test of two runs on the same items: the discordant counts (right only in
    a, right only in b) and the two-sided binomial p-value of their split under "no difference"."""
    a, b = _as_array(a_correct) > 0.5, _as_array(b_correct) > 0.5
    if a.shape != b.shape:
        raise IntervalError(f"runs a and b score {len(a)} and {len(b)} items; pair runs of the same items")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    from scipy.stats import binom

    n = only_a + only_b
    p = min(1.0, 2 * float(binom.cdf(min(only_a, only_b), n, 0.5))) if n else 1.0
    return {"only_a": only_a, "only_b": only_b, "p": p}

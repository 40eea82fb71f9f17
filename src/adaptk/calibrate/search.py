"""Bisection on one scalar, the only search most rules need."""

from __future__ import annotations

from collections.abc import Callable


def bisect(f: Callable[[float], float], lo: float, hi: float, target: float, *,
           increasing: bool, iters: int = 50, tol: float = 1e-6) -> float:
    """Parameter x in [lo, hi] where the monotone ``f(x)`` is closest to ``target``."""
    best_x, best_err = lo, abs(f(lo) - target)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        v = f(mid)
        err = abs(v - target)
        if err < best_err:
            best_x, best_err = mid, err
        if err <= tol:
            break
        if (v < target) == increasing:
            lo = mid
        else:
            hi = mid
    for x in (lo, hi):
        err = abs(f(x) - target)
        if err < best_err:
            best_x, best_err = x, err
    return best_x

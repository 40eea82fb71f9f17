"""Paired uncertainty of a perplexity increase: pure functions over per-token losses.

A baseline and a candidate scored on the SAME tokens give per-token differences
``d_i = loss_cand_i - loss_base_i``; the perplexity increase is ``exp(mean d) - 1`` exactly
(both means run over the same tokens). Tokens of one window share context, so they are not
independent: the unit of resampling is a block of tokens (``adaptk.measure.token_blocks``: the
tokens one sliding window scores), and the mean is the ratio ``sum of block sums / sum of block sizes``.

Two methods, both paired (the same blocks for every side):

- ``bootstrap``: resample blocks with replacement ``n_boot`` times (numpy's ``default_rng(seed)``,
  so the interval is deterministic), percentile interval of the statistic.
- ``block_se``: normal interval from the linearised standard error of the ratio mean over blocks
  (Cochran's ratio estimator), transformed through ``exp(.) - 1``.

``difference_interval`` gives the interval of ``increase(a) - increase(b)`` of two candidates
against one baseline: "a is better than b" is only claimed where it excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch

from adaptk.errors import AdaptkError

METHODS = ("bootstrap", "block_se")


class IntervalError(AdaptkError, ValueError):
    """Inputs an interval cannot be computed from (different lengths, too few blocks)."""


@dataclass(frozen=True)
class IntervalConfig:
    method: str = "bootstrap"
    level: float = 0.95
    n_boot: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise IntervalError(f"unknown interval method {self.method!r}; use one of {', '.join(METHODS)}")
        if not 0.5 <= self.level < 1:
            raise IntervalError(f"interval level must be in [0.5, 1), got {self.level!r}")
        if not isinstance(self.n_boot, int) or self.n_boot < 100:
            raise IntervalError(f"n_boot must be an integer >= 100, got {self.n_boot!r}")


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval (relative: 0.011 = +1.1%)."""

    estimate: float
    lo: float
    hi: float
    level: float
    method: str
    blocks: int

    @property
    def half_width(self) -> float:
        return 0.5 * (self.hi - self.lo)

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "lo": self.lo, "hi": self.hi, "level": self.level,
                "method": self.method, "blocks": self.blocks}


def block_sums(values: torch.Tensor, blocks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(sum, count) per block of the finite values [T] with block ids [T] (ids < 0 ignored) ->
    two float64 arrays [nb], over the blocks that hold at least one value, in block order."""
    v = values.reshape(-1).double()
    b = blocks.reshape(-1).long()
    if v.shape != b.shape:
        raise IntervalError(f"values have {v.numel()} positions, blocks {b.numel()}; pass aligned tensors")
    ok = torch.isfinite(v) & (b >= 0)
    v, b = v[ok], b[ok]
    if not b.numel():
        return np.zeros(0), np.zeros(0)
    nb = int(b.max()) + 1
    s = torch.zeros(nb, dtype=torch.float64).index_add_(0, b, v)
    c = torch.zeros(nb, dtype=torch.float64).index_add_(0, b, torch.ones_like(v))
    keep = c > 0
    return s[keep].numpy(), c[keep].numpy()


def _paired(base: torch.Tensor, cands: list[torch.Tensor], blocks: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Block sums of each candidate's difference to the baseline, over the positions every side
    scored (so that all sides share the same tokens and blocks)."""
    base = base.reshape(-1).double()
    ok = torch.isfinite(base)
    for c in cands:
        if c.numel() != base.numel():
            raise IntervalError(f"baseline scores {base.numel()} positions, a candidate {c.numel()}; "
                                "pair losses of the same tokens")
        ok &= torch.isfinite(c.reshape(-1).double())
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    out = [block_sums(torch.where(ok, c.reshape(-1).double() - base, nan), blocks) for c in cands]
    if len(out[0][0]) < 2:
        raise IntervalError(f"an interval needs at least 2 blocks of tokens, got {len(out[0][0])}; "
                            "give more tokens or a smaller --window")
    return out


def resample_indices(n_blocks: int, n_boot: int, seed: int) -> np.ndarray:
    """The bootstrap's block draws [n_boot, n_blocks] (with replacement, deterministic in seed)."""
    return np.random.default_rng(seed).integers(0, n_blocks, size=(n_boot, n_blocks))


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return float(lo), float(hi)


def _ratio_se(parts: list[tuple[np.ndarray, float]], c: np.ndarray) -> float:
    """Linearised standard error of ``sum_j w_j * sum(s_j) / sum(c)`` over blocks (block sums s_j
    with weights w_j, block sizes c): residuals ``sum_j w_j (s_j - r_j c)`` per block."""
    n, nb = c.sum(), len(c)
    resid = sum(w * (s - (s.sum() / n) * c) for s, w in parts)
    return float(np.sqrt(nb / (nb - 1) * np.sum(resid ** 2)) / n)


def paired_interval(base_loss: torch.Tensor, cand_loss: torch.Tensor, blocks: torch.Tensor,
                    cfg: IntervalConfig = IntervalConfig()) -> Interval:
    """Perplexity increase of the candidate over the baseline, ``exp(mean d) - 1``, with its
    interval. base_loss, cand_loss [T] per-token losses (NaN = not scored), blocks [T] block ids."""
    ((s, c),) = _paired(base_loss, [cand_loss], blocks)
    return _mean_interval(s, c, cfg, np.expm1)


def _mean_interval(s: np.ndarray, c: np.ndarray, cfg: IntervalConfig, f) -> Interval:
    """``f(mean loss)`` over blocks of loss sums s [B] and token counts c [B], with its interval
    (bootstrap percentiles of f, or f of the block-SE bounds of the mean: f is increasing)."""
    est = float(f(s.sum() / c.sum()))
    if cfg.method == "bootstrap":
        idx = resample_indices(len(c), cfg.n_boot, cfg.seed)
        lo, hi = _percentiles(f(s[idx].sum(1) / c[idx].sum(1)), cfg.level)
    else:
        z = NormalDist().inv_cdf(0.5 + cfg.level / 2)
        m, se = s.sum() / c.sum(), _ratio_se([(s, 1.0)], c)
        lo, hi = float(f(m - z * se)), float(f(m + z * se))
    return Interval(est, lo, hi, cfg.level, cfg.method, len(c))


def difference_interval(base_loss: torch.Tensor, a_loss: torch.Tensor, b_loss: torch.Tensor,
                        blocks: torch.Tensor, cfg: IntervalConfig = IntervalConfig()) -> Interval:
    """``increase(a) - increase(b)`` against the same baseline (negative: a costs less), with its
    paired interval (the same block draws for a and b)."""
    (sa, c), (sb, _) = _paired(base_loss, [a_loss, b_loss], blocks)
    ea, eb = np.exp(sa.sum() / c.sum()), np.exp(sb.sum() / c.sum())
    est = float(ea - eb)
    if cfg.method == "bootstrap":
        idx = resample_indices(len(c), cfg.n_boot, cfg.seed)
        n = c[idx].sum(1)
        lo, hi = _percentiles(np.exp(sa[idx].sum(1) / n) - np.exp(sb[idx].sum(1) / n), cfg.level)
    else:  # delta method: d/dm exp(m) = exp(m)
        z = NormalDist().inv_cdf(0.5 + cfg.level / 2)
        se = _ratio_se([(sa, float(ea)), (sb, -float(eb))], c)
        lo, hi = est - z * se, est + z * se
    return Interval(est, lo, hi, cfg.level, cfg.method, len(c))


def perplexity_interval(loss: torch.Tensor, blocks: torch.Tensor,
                        cfg: IntervalConfig = IntervalConfig()) -> Interval:
    """Perplexity ``exp(mean loss)`` of one run (not paired) with its interval over the blocks.
    loss [T] per-token losses (NaN = not scored), blocks [T] block ids. ``estimate``, ``lo`` and
    ``hi`` are perplexities here, not relative increases."""
    s, c = block_sums(loss, blocks)
    if len(c) < 2:
        raise IntervalError(f"an interval needs at least 2 blocks of tokens, got {len(c)}; "
                            "give more tokens or a smaller window")
    return _mean_interval(s, c, cfg, np.exp)

"""Paired intervals of a perplexity increase against plain references: a brute-force bootstrap in
Python loops, the exact bootstrap distribution of a tiny sample, and coverage on synthetic data
whose true increase is known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from adaptk.measure import (
    IntervalConfig,
    IntervalError,
    WindowConfig,
    difference_interval,
    paired_interval,
    token_blocks,
)
from adaptk.measure.intervals import resample_indices
from adaptk.measure.perplexity import plan_windows


def _data(n_blocks=12, size=16, seed=0, shift=0.02):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n_blocks * size, generator=g, dtype=torch.float64) * 4
    cand = base + shift + 0.1 * torch.randn(n_blocks * size, generator=g, dtype=torch.float64)
    blocks = torch.arange(n_blocks).repeat_interleave(size)
    return base, cand, blocks


def _brute_bootstrap(base, cand, blocks, n_boot, seed, level):
    """The same block draws, every statistic in plain Python."""
    groups = {}
    for d, b in zip((cand - base).tolist(), blocks.tolist()):
        groups.setdefault(b, []).append(d)
    keys = sorted(groups)
    stats = []
    for row in resample_indices(len(keys), n_boot, seed):
        vals = [v for i in row for v in groups[keys[i]]]
        stats.append(math.expm1(sum(vals) / len(vals)))
    stats.sort()
    return float(np.quantile(stats, (1 - level) / 2)), float(np.quantile(stats, (1 + level) / 2))


def test_bootstrap_matches_brute_force_and_is_deterministic():
    base, cand, blocks = _data()
    cfg = IntervalConfig(n_boot=300, seed=3)
    iv = paired_interval(base, cand, blocks, cfg)
    lo, hi = _brute_bootstrap(base, cand, blocks, 300, 3, 0.95)
    assert iv.lo == pytest.approx(lo, abs=1e-12) and iv.hi == pytest.approx(hi, abs=1e-12)
    assert iv.estimate == pytest.approx(math.expm1(float((cand - base).mean())), abs=1e-12)
    assert iv.lo < iv.estimate < iv.hi and iv.blocks == 12
    assert paired_interval(base, cand, blocks, cfg) == iv
    assert paired_interval(base, cand, blocks, IntervalConfig(n_boot=300, seed=4)) != iv


def test_bootstrap_converges_to_the_exact_bootstrap_distribution():
    """3 blocks: all 27 resamples are equally likely; the quantiles of that exact distribution."""
    d = [torch.tensor([0.01, 0.03]), torch.tensor([-0.02, 0.0]), torch.tensor([0.05, 0.07])]
    exact = sorted(math.expm1(float(torch.cat([d[i] for i in r]).double().mean()))
                   for r in itertools.product(range(3), repeat=3))
    base = torch.zeros(6, dtype=torch.float64)
    cand = torch.cat(d).double()
    blocks = torch.tensor([0, 0, 1, 1, 2, 2])
    iv = paired_interval(base, cand, blocks, IntervalConfig(level=0.8, n_boot=200_000, seed=1))
    # the 10% / 90% quantiles of the exact distribution, within the discreteness of 27 atoms
    assert exact[2] - 1e-9 <= iv.lo <= exact[3] + 1e-9
    assert exact[23] - 1e-9 <= iv.hi <= exact[24] + 1e-9


@pytest.mark.parametrize("method", ["bootstrap", "block_se"])
def test_identical_inputs_give_zero_width(method):
    base, cand, blocks = _data()
    cfg = IntervalConfig(method=method, n_boot=200)
    iv = paired_interval(base, base.clone(), blocks, cfg)
    assert (iv.estimate, iv.lo, iv.hi) == (0.0, 0.0, 0.0) and not iv.excludes_zero()
    dv = difference_interval(base, cand, cand.clone(), blocks, cfg)
    assert (dv.estimate, dv.lo, dv.hi) == (0.0, 0.0, 0.0)


def test_block_se_matches_a_plain_formula_for_equal_blocks():
    """Equal block sizes: the ratio SE is the SE of the block means (with n/(n-1))."""
    base, cand, blocks = _data(n_blocks=20, size=8)
    iv = paired_interval(base, cand, blocks, IntervalConfig(method="block_se"))
    means = (cand - base).view(20, 8).mean(1)
    m = float(means.mean())
    se = float(means.std(unbiased=True)) / math.sqrt(20)
    assert iv.lo == pytest.approx(math.expm1(m - 1.959963984540054 * se), abs=1e-12)
    assert iv.hi == pytest.approx(math.expm1(m + 1.959963984540054 * se), abs=1e-12)


@pytest.mark.parametrize("method", ["bootstrap", "block_se"])
def test_coverage_on_synthetic_data_with_known_truth(method):
    """Blocks of correlated differences (a shared block effect) with a known mean shift: the 90%
    interval covers the true increase in about 90% of 200 samples; per-token (unblocked)
    treatment of the same data would be far too narrow."""
    rng = np.random.default_rng(7)
    n_blocks, size, shift = 30, 20, 0.01
    truth = math.expm1(shift)
    cfg = IntervalConfig(method=method, level=0.9, n_boot=400)
    blocks = torch.arange(n_blocks).repeat_interleave(size)
    hits = 0
    reps = 200
    for _ in range(reps):
        block_effect = np.repeat(rng.normal(0, 0.02, n_blocks), size)
        d = shift + block_effect + rng.normal(0, 0.02, n_blocks * size)
        base = torch.from_numpy(rng.uniform(1, 5, n_blocks * size))
        iv = paired_interval(base, base + torch.from_numpy(d), blocks, cfg)
        hits += iv.lo <= truth <= iv.hi
    assert 0.82 <= hits / reps <= 0.97


def test_difference_interval_against_brute_force_and_sign():
    base, a, blocks = _data(seed=1, shift=0.05)
    b = base + 0.1 * torch.randn(base.numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cfg = IntervalConfig(n_boot=250, seed=5)
    dv = difference_interval(base, a, b, blocks, cfg)
    ia, ib = paired_interval(base, a, blocks, cfg), paired_interval(base, b, blocks, cfg)
    assert dv.estimate == pytest.approx(ia.estimate - ib.estimate, abs=1e-12)
    stats = []
    for row in resample_indices(12, 250, 5):
        idx = torch.cat([torch.nonzero(blocks == i).flatten() for i in row])
        stats.append(math.exp(float((a - base)[idx].mean())) - math.exp(float((b - base)[idx].mean())))
    assert dv.lo == pytest.approx(float(np.quantile(stats, 0.025)), abs=1e-12)
    assert dv.hi == pytest.approx(float(np.quantile(stats, 0.975)), abs=1e-12)
    assert dv.lo > 0 and dv.excludes_zero()  # a is 5 points worse than b
    se = difference_interval(base, a, b, blocks, IntervalConfig(method="block_se"))
    assert se.lo > 0 and se.estimate == pytest.approx(dv.estimate)


def test_unscored_positions_and_bad_input():
    base, cand, blocks = _data()
    base2 = base.clone()
    base2[:5] = float("nan")  # not scored: left out of both sides
    iv = paired_interval(base2, cand, blocks, IntervalConfig(n_boot=200))
    assert iv.estimate == pytest.approx(math.expm1(float((cand - base)[5:].mean())), abs=1e-12)
    with pytest.raises(IntervalError, match="same tokens"):
        paired_interval(base, cand[:-1], blocks)
    with pytest.raises(IntervalError, match="at least 2 blocks"):
        paired_interval(base, cand, torch.zeros_like(blocks))
    with pytest.raises(IntervalError, match="unknown interval method"):
        IntervalConfig(method="jackknife")


@pytest.mark.parametrize(("n", "window", "stride"), [(100, 32, 16), (64, 32, 32), (33, 32, 8), (200, 50, 7)])
def test_token_blocks_are_the_windows_that_score(n, window, stride):
    ids = token_blocks(n, WindowConfig(window, stride))
    assert ids.shape == (n - 1,)
    expect = torch.full((n - 1,), -1)
    for b, (_, end, first) in enumerate(plan_windows(n, WindowConfig(window, stride))):
        for pos in range(first, end):
            assert expect[pos - 1] == -1  # every token is scored by one window only
            expect[pos - 1] = b
    assert torch.equal(ids, expect)  # stride == window: a window's first token is never predicted (-1)


def test_perplexity_result_block_ids():
    from adaptk.measure import PerplexityResult

    r = PerplexityResult(nll=1.0, tokens=99, window=32, stride=16, seconds=1.0, token_loss=torch.zeros(99))
    assert torch.equal(r.block_ids(), token_blocks(100, WindowConfig(32, 16)))


def test_perplexity_interval_against_brute_force():
    """One run's perplexity: the same block draws, exp(mean loss) in plain Python, and its edges."""
    from adaptk.measure.intervals import perplexity_interval

    loss, _, blocks = _data(n_blocks=10, size=8, seed=5)
    loss[3] = float("nan")  # an unscored position is left out of its block
    groups = {}
    for v, b in zip(loss.tolist(), blocks.tolist()):
        if not math.isnan(v):
            groups.setdefault(b, []).append(v)
    stats = sorted(math.exp(sum(vals) / len(vals)) for row in resample_indices(10, 400, 2)
                   for vals in [[v for i in row for v in groups[i]]])
    iv = perplexity_interval(loss, blocks, IntervalConfig(n_boot=400, seed=2))
    assert iv.lo == pytest.approx(float(np.quantile(stats, 0.025)), abs=1e-12)
    assert iv.hi == pytest.approx(float(np.quantile(stats, 0.975)), abs=1e-12)
    assert iv.estimate == pytest.approx(math.exp(float(loss.nanmean())), abs=1e-12)
    assert iv.lo < iv.estimate < iv.hi and iv.blocks == 10
    se = perplexity_interval(loss, blocks, IntervalConfig(method="block_se"))
    assert se.estimate == iv.estimate and se.lo < se.estimate < se.hi
    flat = perplexity_interval(torch.full((40,), 2.0), torch.arange(4).repeat_interleave(10))
    assert flat.lo == pytest.approx(math.exp(2.0)) and flat.hi == pytest.approx(math.exp(2.0))
    with pytest.raises(IntervalError, match="at least 2 blocks"):
        perplexity_interval(loss[:8], blocks[:8])

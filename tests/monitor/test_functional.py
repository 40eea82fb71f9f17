"""Functional twins against a plain numpy reference."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptk.monitor import functional as F

counts_st = st.lists(st.integers(0, 1000), min_size=1, max_size=40).filter(lambda c: sum(c) > 0)


def np_entropy(p):
    p = np.asarray(p, dtype=np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def np_gini(c):
    c = np.sort(np.asarray(c, dtype=np.float64))
    n = len(c)
    # mean absolute difference definition
    return np.abs(c[:, None] - c[None, :]).sum() / (2 * n * n * c.mean())


@settings(max_examples=60, deadline=None)
@given(counts_st)
def test_load_metrics_match_numpy(c):
    a = np.asarray(c, dtype=np.float64)
    t = torch.tensor(c)
    assert F.load_cv(t) == pytest.approx(a.std() / a.mean(), rel=1e-9, abs=1e-12)
    assert F.max_over_mean(t) == pytest.approx(a.max() / a.mean(), rel=1e-9)
    assert F.gini(t) == pytest.approx(np_gini(a), rel=1e-9, abs=1e-12)
    assert F.dead_fraction(t) == pytest.approx(np.mean(a == 0))
    assert F.effective_experts(t) == pytest.approx(np.exp(np_entropy(a / a.sum())), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(2, 16), st.integers(0, 2**31 - 1))
def test_mutual_information_matches_numpy(t, n, seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(n, 0.3), size=t)
    ref = np_entropy(p.mean(axis=0)) - np_entropy(p).mean()
    assert F.mutual_information(torch.tensor(p)) == pytest.approx(max(ref, 0.0), abs=1e-9)
    assert 0.0 <= F.mutual_information(torch.tensor(p)) <= math.log(n) + 1e-9


def test_extremes():
    n = 8
    assert F.gini(torch.tensor([0] * (n - 1) + [5])) == pytest.approx((n - 1) / n)
    assert F.gini(torch.full((n,), 3)) == pytest.approx(0.0)
    assert F.effective_experts(torch.full((n,), 3)) == pytest.approx(n)
    same = torch.softmax(torch.randn(1, n), -1).repeat(10, 1)
    assert F.mutual_information(same) == pytest.approx(0.0, abs=1e-9)
    onehot = torch.eye(n)
    assert F.mutual_information(onehot) == pytest.approx(math.log(n))
    assert math.isnan(F.load_cv(torch.zeros(n)))


def test_entropy_histogram_matches_numpy():
    rng = np.random.default_rng(0)
    n, bins = 8, 16
    h = rng.uniform(0, math.log(n), size=500)
    ref, _ = np.histogram(np.clip(h, 0, math.log(n) * (1 - 1e-12)), bins=bins, range=(0, math.log(n)))
    assert F.entropy_histogram(torch.tensor(h), n, bins).tolist() == ref.tolist()


def test_overflow_matches_definition():
    c = torch.tensor([10, 0, 2, 4])
    cap = math.floor(1.0 * 8 * 2 / 4)  # 4
    assert F.overflow(c, tokens=8, k=2, capacity_factor=1.0) == 10 - cap


@settings(max_examples=40, deadline=None)
@given(counts_st, st.integers(0, 2**31 - 1))
def test_psi_and_js_match_numpy(c, seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 50, size=len(c)) + 1
    eps = 1e-4

    def sm(x):
        p = np.asarray(x, dtype=np.float64) / np.sum(x) + eps
        return p / p.sum()

    e, a = sm(c), sm(d)
    assert F.psi(torch.tensor(c), torch.tensor(d), eps) == pytest.approx(np.sum((a - e) * np.log(a / e)), abs=1e-9)
    p, q = np.asarray(c) / np.sum(c), d / d.sum()
    m = (p + q) / 2
    js = (np_entropy(m) - (np_entropy(p) + np_entropy(q)) / 2) / np.log(2)
    assert F.js_divergence(torch.tensor(c), torch.tensor(d)) == pytest.approx(max(js, 0), abs=1e-9)
    assert F.psi(torch.tensor(c), torch.tensor(c)) == pytest.approx(0.0, abs=1e-12)
    assert F.js_divergence(torch.tensor(c), torch.tensor(c)) == pytest.approx(0.0, abs=1e-12)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        F.load_cv(torch.ones(2, 2))
    with pytest.raises(ValueError):
        F.mutual_information(torch.ones(3))

"""Sufficient statistics: numpy reference, exact merges, NaN masking, threads."""

import json
import math
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptk.monitor import LayerState, MonitorError
from adaptk.monitor.state import LayerStateError
from adaptk.routing.statistic import Statistic, StatisticError

N, K = 8, 2


def batch(t, seed, n=N, k=K, temp=1.0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(t, n, generator=g) / temp, dim=-1)  # [T, N]
    idx = probs.topk(k, dim=-1).indices  # [T, K]
    return probs, idx


def state(**kw):
    return LayerState(0, "layer0", N, K, **kw)


def test_summary_matches_numpy():
    probs, idx = batch(300, 0)
    s = state()
    s.update(probs[:120], idx[:120])
    s.update(probs[120:], idx[120:])
    out = s.summary()
    p = probs.double().numpy()
    h = -(p * np.log(p)).sum(-1)
    assert out.tokens == 300
    assert out.entropy_mean == pytest.approx(h.mean(), rel=1e-9)
    assert out.entropy_std == pytest.approx(h.std(), rel=1e-7)
    assert out.entropy_normalized == pytest.approx(h.mean() / math.log(N), rel=1e-9)
    counts = np.bincount(idx.reshape(-1).numpy(), minlength=N)
    assert out.expert_counts == counts.tolist()
    assert out.k_histogram[K] == 300 and sum(out.k_histogram) == 300
    mi = -(p.mean(0) * np.log(p.mean(0))).sum() - h.mean()
    assert out.mutual_information == pytest.approx(mi, rel=1e-9)
    assert sum(out.entropy_histogram) == 300
    assert out.load_cv == pytest.approx(counts.std() / counts.mean())


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 200), st.integers(0, 200), st.integers(0, 10**6))
def test_merge_of_halves_equals_whole(t, cut, seed):
    probs, idx = batch(t, seed)
    cut = min(cut, t)
    whole, a, b = state(), state(), state()
    whole.update(probs, idx)
    if cut:
        a.update(probs[:cut], idx[:cut])
    if cut < t:
        b.update(probs[cut:], idx[cut:])
    a.merge(b)
    sw, sa = whole.state_dict(), a.state_dict()
    for key in ("tokens", "nonfinite", "h_hist", "k_hist", "expert_counts", "assigned"):
        assert sa[key] == sw[key], key  # counts: exact
    for key in ("h_count", "h_mean", "h_m2", "h_sum"):
        assert sa[key] == pytest.approx(sw[key], rel=1e-9, abs=1e-9), key
    assert np.allclose(sa["prob_sum"], sw["prob_sum"], rtol=1e-12)


def test_state_dict_round_trip_and_bad_merge():
    probs, idx = batch(50, 1)
    s = state()
    s.update(probs, idx)
    back = LayerState.from_state_dict(s.state_dict())
    assert back.summary() == s.summary()
    with pytest.raises(MonitorError):
        s.merge(LayerState(1, "other", 4, 2))


def test_nonfinite_tokens_counted_not_folded():
    probs, idx = batch(20, 2)
    clean = state()
    clean.update(probs[5:], idx[5:])
    dirty = state()
    bad = probs.clone()
    bad[:5] = float("nan")
    dirty.update(bad, idx)
    d, c = dirty.summary(), clean.summary()
    assert d.nonfinite_tokens == 5 and d.tokens == 15
    assert d.expert_counts == c.expert_counts
    assert d.entropy_mean == pytest.approx(c.entropy_mean) and not math.isnan(d.entropy_mean)
    assert d.entropy_histogram == c.entropy_histogram


def test_dropped_slots_give_k_histogram():
    probs, idx = batch(6, 3, k=3)
    idx[:3, 2] = N  # sentinel: dropped slot
    idx[:1, 1] = N
    s = state()
    s.update(probs, idx)
    out = s.summary()
    assert out.k_histogram[1] == 1 and out.k_histogram[2] == 2 and out.k_histogram[3] == 3
    assert sum(out.expert_counts) == 6 * 3 - 4


def test_overflow_rate():
    probs = torch.full((8, N), 1.0 / N)
    idx = torch.zeros(8, 1, dtype=torch.long)  # every token to expert 0
    s = LayerState(0, "l", N, 1, capacity_factor=1.0)
    s.update(probs, idx)
    out = s.summary()  # capacity floor(1 * 8 * 1 / 8) = 1 -> 7 of 8 overflow
    assert out.overflow_rate == pytest.approx(7 / 8)
    assert out.batches_with_overflow == 1


def test_concurrent_updates_lose_no_counts():
    from adaptk.monitor import RoutingMonitor
    from adaptk.monitor.monitor import _Layer

    mon = RoutingMonitor()
    mon.fingerprint = {"architecture": "synthetic"}
    mon._layers = [_Layer(0, "l0", N, K, mon.config, "cpu")]
    probs, idx = batch(10, 4)
    threads = [threading.Thread(target=lambda: [mon.update(0, probs, idx) for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    out = mon.compute().layers[0]
    assert out.tokens == 4 * 50 * 10
    assert sum(out.expert_counts) == 4 * 50 * 10 * K


# ---- the Statistic protocol ---------------------------------------------------------------------

PER_BATCH = ("overflow_rate", "batches_with_overflow", "batches")  # capacity is per batch: not per token
FLOATS = ("entropy_mean", "entropy_std", "entropy_normalized", "average_k", "load_cv", "max_over_mean", "gini",
          "dead_fraction", "effective_experts", "mutual_information", "overflow_rate")


def _same_summary(a, b, skip=()):
    """Every field equal: counts exactly, the float figures to float64 rounding (rel 1e-9, abs
    1e-12: Chan's moments and the probability sums are combined in another order); NaN == NaN."""
    da, db = a.to_dict(), b.to_dict()
    for key, value in da.items():
        if key in skip:
            continue
        if key in FLOATS:
            assert (math.isnan(value) and math.isnan(db[key])) or value == pytest.approx(db[key], rel=1e-9,
                                                                                            abs=1e-12), key
        else:
            assert value == db[key], key


def _nan_rows(probs, seed):
    g = torch.Generator().manual_seed(seed)
    out = probs.clone()
    out[torch.rand(probs.shape[0], generator=g) < 0.15] = float("nan")
    return out


def test_layer_state_is_a_statistic_whose_compute_is_its_summary():
    s = state()
    s.update(*batch(20, 5))
    assert isinstance(s, Statistic) and s.compute() == s.summary()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 120), st.integers(1, 120), st.integers(0, 10**6))
def test_merge_equals_one_state_of_both_batches(ta, tb, seed):
    (pa, ia), (pb, ib) = batch(ta, seed), batch(tb, seed + 1)
    pa, pb = _nan_rows(pa, seed), _nan_rows(pb, seed + 1)
    a, b, seq, whole = state(), state(), state(), state()
    a.update(pa, ia)
    b.update(pb, ib)
    a.merge(b)
    seq.update(pa, ia)  # the same two batches, one after the other: every figure
    seq.update(pb, ib)
    _same_summary(a.compute(), seq.compute())
    whole.update(torch.cat((pa, pb)), torch.cat((ia, ib)))  # one batch of both: every per-token figure
    _same_summary(a.compute(), whole.compute(), skip=PER_BATCH)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 80), st.integers(0, 10**6))
def test_load_state_dict_round_trips_through_json(t, seed):
    s = state()
    if t:
        s.update(*batch(t, seed))
    back = state()
    back.update(*batch(7, seed + 1))  # replaced by the load
    back.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert back.state_dict() == s.state_dict()
    assert json.dumps(back.compute().to_dict()) == json.dumps(s.compute().to_dict())


def test_bad_saved_states_and_merges_raise_and_change_nothing():
    s = state()
    s.update(*batch(30, 6))
    before = s.state_dict()
    saved = before.copy()
    for bad, match in [({**saved, "num_experts": N + 1}, "num_experts"),
                       ({**saved, "capacity_factor": 2.0}, "capacity_factor"),
                       ({k: v for k, v in saved.items() if k != "h_m2"}, "lacks h_m2"),
                       ({**saved, "k_hist": saved["k_hist"][:-1]}, "k_hist"),
                       ({**saved, "expert_counts": [-1] * N}, "negative or not whole"),
                       ({**saved, "prob_sum": "many"}, "prob_sum")]:
        with pytest.raises(LayerStateError, match=match):
            s.load_state_dict(bad)
        assert s.state_dict() == before
    with pytest.raises(LayerStateError):
        LayerState.from_state_dict({"layer": 0})
    with pytest.raises(StatisticError, match="native_k"):  # a MonitorError and a StatisticError
        s.merge(LayerState(0, "layer0", N, K + 1))
    assert s.state_dict() == before

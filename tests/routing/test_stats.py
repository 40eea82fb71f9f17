"""``LayerStats``: small updates are folded later, with the counts one update of everything gives."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from threads import run_in_threads

from adaptk.routing.statistic import Statistic, StatisticError
from adaptk.routing.stats import FOLD_TOKENS, LayerStats

N, K = 6, 3


def _calls(sizes, seed=0):
    """(entropy [T], candidates [T, K], drop [T, K]) per call; every token keeps its first slot."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in sizes:
        entropy = torch.rand(t, generator=g) * 2
        cand = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(t)])  # [T, K]
        drop = torch.rand(t, K, generator=g) < 0.4
        drop[:, 0] = False
        out.append((entropy, cand, drop))
    return out


def _report(calls):
    s = LayerStats(0, "layer", N, 2, K, torch.device("cpu"))
    for call in calls:
        s.update(*call)
    return s, s.report()


def _cat(calls):
    return tuple(torch.cat(parts) for parts in zip(*calls))


def test_small_updates_fold_to_the_counts_of_one_update():
    calls = _calls([1] * (FOLD_TOKENS + 37) + [5, 300, 2])  # crosses the fold limit, then leaves some pending
    _, parts = _report(calls)
    _, whole = _report([_cat(calls)])
    ent, cand, drop = _cat(calls)
    ent = ent.double()
    idx = torch.where(drop, N, cand)  # sentinel N where dropped
    k = (~drop).sum(-1)
    assert parts.tokens == whole.tokens == ent.numel()
    assert parts.k_histogram == whole.k_histogram == torch.bincount(k, minlength=K + 1).tolist()
    assert parts.expert_counts == whole.expert_counts == torch.bincount(idx[idx < N], minlength=N).tolist()
    assert abs(parts.entropy_mean - float(ent.mean())) < 1e-9
    assert abs(parts.entropy_std - float(ent.std(unbiased=False))) < 1e-6


def test_report_folds_what_is_pending_and_reset_drops_it():
    s, first = _report(_calls([1, 1, 1]))
    assert first.tokens == 3 and sum(first.k_histogram) == 3
    s.update(*_calls([2], seed=1)[0])
    s.reset()
    again = s.report()
    assert again.tokens == 0 and sum(again.k_histogram) == 0 and sum(again.expert_counts) == 0


def test_pending_updates_hold_no_autograd_graph():
    s = LayerStats(0, "layer", N, 2, K, torch.device("cpu"))
    e = torch.rand(4, requires_grad=True) * 1.0
    s.update(e, *_calls([4])[0][1:])
    assert not s._pending[0][0].requires_grad


def test_deferred_logit_checks_count_nonfinite_tokens_across_folds():
    sizes = [1] * (FOLD_TOKENS + 3) + [7]
    calls = _calls(sizes)
    s = LayerStats(0, "layer", N, 2, K, torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    bad = 0
    for i, call in enumerate(calls):
        logits = torch.randn(call[0].shape[0], N, generator=g)
        if i % 5 == 0:  # NaN, +Inf and -Inf in one token each
            logits[0, i % N] = (float("nan"), float("inf"), float("-inf"))[i % 3]
            bad += 1
        s.update(*call, logits=logits.requires_grad_())
    assert s._pending_logits and not any(t.requires_grad for t in s._pending_logits)
    report = s.report()
    assert report.nonfinite_tokens == bad and report.tokens == sum(sizes)
    s.reset()
    assert s.report().nonfinite_tokens == 0


def test_threads_updating_one_layer_count_every_token():
    """Threads serving one model share its layers' statistics: each update (and each fold of
    the pending ones) happens under the lock, so none is lost or folded twice (without it, this
    folds pending updates twice)."""
    stats = LayerStats(0, "layer", 8, 2, 2, "cpu")
    entropy, candidates, drop = torch.rand(1), torch.tensor([[1, 2]]), torch.tensor([[False, True]])
    calls, threads = 10000, 4

    def work():
        for _ in range(calls):
            stats.update(entropy, candidates, drop)
            stats.add_rows(torch.ones(8, dtype=torch.long))

    run_in_threads(work, threads)
    report = stats.report()
    assert report.tokens == sum(report.k_histogram) == report.k_histogram[1] == threads * calls
    assert report.expert_counts[1] == threads * calls and report.executed_pairs == threads * calls * 8


# ---- the Statistic protocol: merge, state_dict, a plain reference --------------------------------

KMAX = K + 2  # room in the k histogram past K: its offsets matter


def _stats(kmax=KMAX, n=N):
    return LayerStats(0, "layer", n, 2, kmax, "cpu")


def _fed(calls, rows=None, logits=None):
    s = _stats()
    for i, call in enumerate(calls):
        s.update(*call, logits=None if logits is None else logits[i])
    if rows is not None:
        s.add_rows(rows)
    return s


def _same_report(a, b):
    """Counts exact; the entropy moments to float64 rounding: |Δ mean| <= 1e-12 (1 + |mean|) and
    the variances (std²) within 1e-12 (1 + mean²) (std itself is a square root of a difference,
    sqrt(1e-16) ~ 1e-8 off where the variance is near 0)."""
    da, db = a.to_dict(), b.to_dict()
    floats = ("entropy_mean", "entropy_std", "average_k", "compute_fraction")
    assert {k: v for k, v in da.items() if k not in floats} == {k: v for k, v in db.items() if k not in floats}
    if a.tokens == 0:
        assert all(math.isnan(da[k]) and math.isnan(db[k]) for k in floats[:3])
        return
    assert a.average_k == pytest.approx(b.average_k, rel=1e-12)
    assert abs(a.entropy_mean - b.entropy_mean) <= 1e-12 * (1 + abs(a.entropy_mean))
    assert abs(a.entropy_std ** 2 - b.entropy_std ** 2) <= 1e-12 * (1 + a.entropy_mean ** 2)


def _logits(calls, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for entropy, _, _ in calls:
        x = torch.randn(entropy.shape[0], N, generator=g)
        x[torch.rand(entropy.shape[0], generator=g) < 0.2, 0] = float("nan")
        out.append(x)
    return out


def test_layer_stats_is_a_statistic_whose_compute_is_its_report():
    s = _fed(_calls([4, 3]))
    assert isinstance(s, Statistic)
    assert s.compute() == s.report()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=4), st.lists(st.integers(1, 40), max_size=4), st.integers(0, 10**6))
def test_merge_of_two_collectors_equals_one_collector_of_both_batches(sizes_a, sizes_b, seed):
    calls_a, calls_b = _calls(sizes_a, seed), _calls(sizes_b, seed + 1)
    logits_a, logits_b = _logits(calls_a, seed), _logits(calls_b, seed + 1)
    rows_a, rows_b = torch.arange(N), torch.arange(N) * 3
    a, b = _fed(calls_a, rows_a, logits_a), _fed(calls_b, rows_b, logits_b)  # b leaves updates pending
    a.merge(b)
    both = calls_a + calls_b
    whole = _fed([_cat(both)] if both else [], rows_a + rows_b, [torch.cat(logits_a + logits_b)] if both else None)
    _same_report(a.compute(), whole.compute())
    _same_report(b.compute(), _fed(calls_b, rows_b, logits_b).compute())  # the merged-in one is unchanged


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 30), max_size=4), st.integers(0, 10**6))
def test_state_dict_round_trips_through_json(sizes, seed):
    calls = _calls(sizes, seed)
    s = _fed(calls, torch.arange(N), _logits(calls, seed))
    back = _stats()
    back.update(*_calls([3], seed + 7)[0])  # something pending, to be replaced
    back.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert json.dumps(back.compute().to_dict()) == json.dumps(s.compute().to_dict())  # exact (NaN too)
    assert back.state_dict() == s.state_dict()


def test_compute_matches_a_plain_numpy_reference():
    calls = _calls([5, 1, 40, 2], seed=11)
    logits = _logits(calls, 3)
    rows = torch.tensor([3, 0, 1, 4, 1, 5])
    r = _fed(calls, rows, logits).compute()
    ent, cand, drop = (x.numpy() for x in _cat(calls))
    h = ent.astype(np.float64)
    kept = (~drop).sum(-1)
    assert r.tokens == len(h)
    assert r.entropy_mean == pytest.approx(h.mean(), rel=1e-12)
    assert r.entropy_std == pytest.approx(h.std(), rel=1e-9)
    assert r.k_histogram == np.bincount(kept, minlength=KMAX + 1).tolist()
    assert r.average_k == pytest.approx(kept.mean(), rel=1e-12)
    assert r.expert_counts == np.bincount(cand[~drop], minlength=N).tolist()
    assert r.nonfinite_tokens == int((~np.isfinite(torch.cat(logits).numpy())).any(-1).sum())
    assert r.executed_pairs == int(rows.sum()) and r.native_pairs == 2 * len(h)


def test_merge_and_load_refuse_another_shape_and_change_nothing():
    s = _fed(_calls([6]))
    before = s.state_dict()
    with pytest.raises(StatisticError, match="kmax"):
        s.merge(_stats(kmax=K))
    with pytest.raises(StatisticError, match="num_experts"):
        s.merge(LayerStats(0, "layer", N + 1, 2, KMAX, "cpu"))
    saved = _fed(_calls([4], seed=2)).state_dict()
    bad = [
        ({**saved, "num_experts": N + 1}, "num_experts"),
        ({k: v for k, v in saved.items() if k != "expert_counts"}, "lacks expert_counts"),
        ({**saved, "expert_counts": saved["expert_counts"][:-1]}, "shape"),
        ({**saved, "k_histogram": [-1] + saved["k_histogram"][1:]}, "negative or not whole"),
        ({**saved, "entropy_sum": "x"}, "entropy_sum"),
        ({**saved, "matmul_rows": [0.5] * N}, "not whole"),
        ([1, 2], "dict"),
    ]
    for state, match in bad:
        with pytest.raises(StatisticError, match=match):
            s.load_state_dict(state)
        assert s.state_dict() == before


def test_load_keeps_the_counters_addresses_the_c_routers_hold():
    s = _stats()
    addresses = (s.counts.data_ptr(), s.entropy_moments.data_ptr())
    s.load_state_dict(_fed(_calls([9])).state_dict())
    s.merge(_fed(_calls([2], seed=5)))
    assert (s.counts.data_ptr(), s.entropy_moments.data_ptr()) == addresses
    assert s.compute().tokens == 11

"""``LoadAccumulator``: the training log's expert load as a ``Statistic``."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptk.routing.statistic import Statistic, StatisticError
from adaptk.train.health import LoadAccumulator, LoadFigures, layer_health

N, K = 6, 2


def _batch(t, seed):
    """indices [T, K] (experts, skewed to the low ids) and keep [T, K] bool."""
    g = torch.Generator().manual_seed(seed)
    indices = (torch.rand(t, K, generator=g) ** 2 * N).long()
    return indices, torch.rand(t, K, generator=g) < 0.8


def _acc(batches):
    a = LoadAccumulator(N)
    for b in batches:
        a.update(*b)
    return a


def test_is_a_statistic_and_add_is_update():
    a, b = LoadAccumulator(N), LoadAccumulator(N)
    assert isinstance(a, Statistic)
    a.add(*_batch(9, 0))
    b.update(*_batch(9, 0))
    assert a.state_dict() == b.state_dict()


def test_compute_matches_a_numpy_reference():
    batches = [_batch(t, s) for s, t in enumerate((7, 1, 50))]
    out = _acc(batches).compute()
    idx = torch.cat([b[0] for b in batches]).numpy()
    keep = torch.cat([b[1] for b in batches]).numpy()
    counts = np.bincount(idx.reshape(-1), minlength=N).astype(float)
    p = counts / counts.sum()
    nz = p[p > 0]
    assert isinstance(out, LoadFigures)
    assert out.expert_load == counts.astype(int).tolist()
    assert out.slots == idx.size and out.dropped == int((~keep).sum())
    assert out.drop_rate == pytest.approx((~keep).sum() / idx.size)
    assert out.load_cv == pytest.approx(counts.std() / counts.mean())
    assert out.load_max_over_mean == pytest.approx(counts.max() / counts.mean())
    assert out.load_entropy == pytest.approx(-(nz * np.log(nz)).sum() / math.log(N))
    assert out.dead_experts == np.flatnonzero(counts == 0).tolist()
    assert out.dead_fraction == pytest.approx((counts == 0).mean())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 30), max_size=3), st.lists(st.integers(1, 30), max_size=3), st.integers(0, 10**6))
def test_merge_equals_one_accumulator_of_both_batches(sizes_a, sizes_b, seed):
    ba = [_batch(t, seed + i) for i, t in enumerate(sizes_a)]
    bb = [_batch(t, seed + 100 + i) for i, t in enumerate(sizes_b)]
    a, b = _acc(ba), _acc(bb)
    a.merge(b)
    both = ba + bb
    whole = _acc([tuple(torch.cat(x) for x in zip(*both))] if both else [])
    assert json.dumps(a.compute().__dict__) == json.dumps(whole.compute().__dict__)  # exact, NaN included


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 30), max_size=3), st.integers(0, 10**6))
def test_state_dict_round_trips_through_json(sizes, seed):
    a = _acc([_batch(t, seed + i) for i, t in enumerate(sizes)])
    back = _acc([_batch(4, seed + 50)])
    back.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert back.state_dict() == a.state_dict()
    assert json.dumps(back.compute().__dict__) == json.dumps(a.compute().__dict__)


def test_bad_states_and_merges_raise_and_change_nothing():
    a = _acc([_batch(10, 1)])
    saved = a.state_dict()
    for bad, match in [({**saved, "num_experts": N + 1}, "num_experts"),
                       ({**saved, "counts": saved["counts"][:-1]}, "shape"),
                       ({**saved, "dropped": saved["slots"] + 1}, "dropped"),
                       ({**saved, "slots": 1.5}, "slots"),
                       ({k: v for k, v in saved.items() if k != "slots"}, "lacks slots")]:
        with pytest.raises(StatisticError, match=match):
            a.load_state_dict(bad)
        assert a.state_dict() == saved
    with pytest.raises(StatisticError, match="num_experts"):
        a.merge(LoadAccumulator(N + 1))
    a.reset()
    assert a.state_dict() == {"num_experts": N, "counts": [0] * N, "slots": 0, "dropped": 0}


def test_layer_health_reports_the_load_figures():
    load = _acc([_batch(40, 3)])
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(40, N, generator=g), -1)
    out = layer_health(probs, probs.topk(K).indices, load, None)
    fig = load.compute()
    for key in ("load_entropy", "expert_load", "load_cv", "load_max_over_mean", "dead_fraction", "dead_experts",
                "drop_rate"):
        assert out[key] == getattr(fig, key), key

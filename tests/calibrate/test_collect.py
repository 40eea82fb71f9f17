"""``LayerRecorder``: the calibration's per-layer routing record as a ``Statistic``."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptk.calibrate.collect import LayerRecorder, RouterRecorder
from adaptk.routing.statistic import Statistic, StatisticError
from calibrate.helpers import controlled_mixtral, random_ids

N, K = 12, 2  # Kc = min(12, max(8, 4)) = 8


def _call(t, seed):
    """probs [T, N] (a softmax) and rank [T, N] (the model's ranking scores: here the logits)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, N, generator=g) * 2
    return torch.softmax(logits, dim=-1), logits


def _recorder(cap=10**6, calls=()):
    r = LayerRecorder(3, N, K, cap)
    for call in calls:
        r.update(*call)
    return r


def _same(a, b):
    """Exact: each token's figures come from its own row, whatever the call it came in."""
    assert (a.index, a.num_experts, a.native_k) == (b.index, b.num_experts, b.native_k)
    for x, y in ((a.entropy, b.entropy), (a.ranked, b.ranked), (a.expert_counts, b.expert_counts)):
        assert x.dtype == y.dtype and torch.equal(x, y)


def test_is_a_statistic_and_compute_matches_a_numpy_reference():
    calls = [_call(t, s) for s, t in enumerate((5, 1, 30))]
    r = _recorder(calls=calls)
    assert isinstance(r, Statistic)
    out = r.compute()
    p = torch.cat([c[0] for c in calls]).double().numpy()
    rank = torch.cat([c[1] for c in calls]).numpy()
    order = np.argsort(-rank, axis=-1, kind="stable")[:, :8]
    assert np.allclose(out.entropy.numpy(), -(p * np.log(p)).sum(-1), rtol=1e-5)
    assert np.allclose(out.ranked.numpy(), np.take_along_axis(p, order, -1), rtol=1e-6)
    assert out.expert_counts.tolist() == np.bincount(order[:, :K].reshape(-1), minlength=N).tolist()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 20), max_size=3), st.lists(st.integers(1, 20), max_size=3), st.integers(1, 60),
       st.integers(0, 10**6))
def test_merge_equals_one_recorder_of_both_batches_up_to_the_cap(sizes_a, sizes_b, cap, seed):
    calls_a = [_call(t, seed + i) for i, t in enumerate(sizes_a)]
    calls_b = [_call(t, seed + 100 + i) for i, t in enumerate(sizes_b)]
    a, b = _recorder(cap, calls_a), _recorder(cap, calls_b)
    a.merge(b)
    both = calls_a + calls_b
    whole = _recorder(cap, [tuple(torch.cat(x) for x in zip(*both))] if both else [])
    _same(a.compute(), whole.compute())
    assert a.count == whole.count == min(cap, sum(sizes_a) + sum(sizes_b))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 20), max_size=3), st.integers(0, 10**6))
def test_state_dict_round_trips_through_json(sizes, seed):
    r = _recorder(50, [_call(t, seed + i) for i, t in enumerate(sizes)])
    back = _recorder(50, [_call(3, seed + 9)])
    back.load_state_dict(json.loads(json.dumps(r.state_dict())))
    _same(back.compute(), r.compute())
    assert back.count == r.count


def test_reset_and_bad_states():
    r = _recorder(calls=[_call(6, 0)])
    saved = r.state_dict()
    for bad, match in [({**saved, "num_experts": N + 1}, "num_experts"),
                       ({k: v for k, v in saved.items() if k != "top"}, "lacks top"),
                       ({**saved, "top": [[N, 0]] * 6}, "past"),
                       ({**saved, "ranked": saved["ranked"][:-1]}, "shape")]:
        with pytest.raises(StatisticError, match=match):
            r.load_state_dict(bad)
        assert r.state_dict() == saved
    with pytest.raises(StatisticError, match="at most 4"):
        _recorder(4).load_state_dict(saved)
    with pytest.raises(StatisticError, match="native_k"):
        r.merge(LayerRecorder(3, N, K + 1, 10))
    r.reset()
    out = r.compute()
    assert r.count == 0 and out.entropy.shape == (0,) and out.ranked.shape == (0, 8)
    assert out.expert_counts.tolist() == [0] * N


def test_router_recorder_feeds_each_layers_recorder_up_to_the_cap():
    """Through the hooks on a tiny model: each layer's record capped, counts of its native top-k."""
    model = controlled_mixtral()
    with RouterRecorder(model, max_tokens=40) as rec:
        model(input_ids=random_ids(32).reshape(1, -1), use_cache=False)
        model(input_ids=random_ids(32, seed=1).reshape(1, -1), use_cache=False)
    stats = rec.result()
    assert stats.tokens == 40
    for layer in stats.layers:
        assert layer.entropy.shape == (40,) and int(layer.expert_counts.sum()) == 40 * layer.native_k
    assert torch.allclose(stats.layers[0].entropy, torch.full((40,), math.log(8)), atol=1e-5)  # uniform router

"""layer_static: whole MoE layers at a fixed k (no per-token signal), the least sensitive layers
first, against brute force and through a patched run."""

from __future__ import annotations

import itertools

import pytest
from calibrate.helpers import random_ids
from tiny_models import tiny_model

from adaptk.calibrate import collect_router_stats
from adaptk.errors import PolicyError
from adaptk.measure import WindowConfig, measure
from adaptk.routing import policy_from_dict
from adaptk.rules import FitInputs, get_rule
from adaptk.rules.layer_static import drop_order, layer_ks, layer_static_for_avg_k
from adaptk.rules.layer_static_policy import LayerFixedK

CFG = WindowConfig(64, 64)


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("mixtral", seed=0)
    ids = random_ids(2048, seed=4)
    return model, ids, collect_router_stats(model, ids, window=64)


def test_layer_ks_steps_whole_layers_in_order_to_the_closest_average():
    assert layer_ks([2, 0, 1, 3], (1, 2), 1.5) == [1, 2, 1, 2]
    assert layer_ks([2, 0, 1, 3], (1, 2), 1.8) == [2, 2, 1, 2]  # 1.75 is the closest whole-layer k
    assert layer_ks([2, 0, 1, 3], (1, 2), 2.0) == [2, 2, 2, 2]
    assert layer_ks([1, 0], (1, 2, 4), 2.5) == [4, 1]  # layer 1 lowered 4 -> 2 -> 1 first
    for target in (1.0, 1.3, 1.55, 1.9):  # brute force: no assignment of whole layers is closer
        best = min(abs(sum(ks) / 4 - target) for ks in itertools.product((1, 2), repeat=4))
        assert abs(sum(layer_ks([0, 1, 2, 3], (1, 2), target)) / 4 - target) == pytest.approx(best)


def test_layer_static_drops_the_least_sensitive_layers_and_routes_them_at_a_fixed_k(setup):
    model, ids, stats = setup
    f = FitInputs(stats, (1, 2), weights=[0.4, 1.0])  # layer 1 is the least sensitive
    assert drop_order(f) == [1, 0]
    pol = layer_static_for_avg_k(f, 1.5)
    assert pol == LayerFixedK((2, 1)) and policy_from_dict(pol.to_dict()) == pol
    assert get_rule("layer_static").policy is LayerFixedK
    m = measure(model, pol, ids, CFG)
    assert [lay.k_histogram[1:3] for lay in m.report.layers] == [[0, 2048], [2048, 0]]
    assert m.average_k == 1.5
    entropy = [float(lay.entropy.mean()) for lay in stats.layers]  # without weights: highest entropy first
    assert drop_order(FitInputs(stats, (1, 2)))[0] == max(range(2), key=lambda i: entropy[i])



def test_layer_fixed_k_is_validated():
    for bad in ((), (0, 2), (1.5, 2), (True, 2)):
        with pytest.raises(PolicyError):
            LayerFixedK(bad)

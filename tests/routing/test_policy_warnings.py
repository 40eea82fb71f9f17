"""Policies that cannot work are refused; legal but probably mistaken ones are logged."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_model

import adaptk
from adaptk.errors import PolicyError
from adaptk.routing import EntropyThreshold, FixedTopK, RatioSkip, TopP, policy_from_dict

LOG8 = math.log(8)
LOGGER = "adaptk.routing.policies"


def _warnings(caplog, policy, num_layers=2, num_experts=8, native_k=2):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        policy.validate_for(num_layers, num_experts, native_k)
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("thresholds", [(-0.1,), ((0.5,), (-1.0,)), (-math.inf,)])
def test_negative_threshold_is_an_error(thresholds):
    with pytest.raises(PolicyError, match=r"thresholds must be >= 0.*never negative"):
        EntropyThreshold((1, 2), thresholds)


def test_negative_threshold_in_a_policy_dict_is_an_error():
    with pytest.raises(PolicyError, match=">= 0"):
        policy_from_dict({"rule": "entropy_threshold", "k_values": [1, 2], "thresholds": [-0.5]})


def test_unsorted_thresholds_still_an_error():
    with pytest.raises(PolicyError, match="non-decreasing"):
        EntropyThreshold((1, 2, 4), (1.0, 0.5))


def test_zero_threshold_is_legal():
    assert EntropyThreshold((1, 2), (0.0,)).thresholds == (0.0,)


@pytest.mark.parametrize("policy, k", [
    (EntropyThreshold((1, 2), (5.0,)), 1),  # above log 8: never reached
    (EntropyThreshold((1, 2), (0.0,)), 2),  # every entropy is >= 0
    (EntropyThreshold((1, 2, 4), (0.0, 9.0)), 2),
    (TopP(0.5, min_k=2, max_k=2), 2),
    (RatioSkip(0.0, 2), 2),
])
def test_policy_that_never_changes_k_is_warned(caplog, policy, k):
    msgs = _warnings(caplog, policy)
    assert any("can never change k" in m and f"k={k}" in m for m in msgs), msgs


def test_per_layer_thresholds_warned_only_when_no_layer_can_change(caplog):
    assert not [m for m in _warnings(caplog, EntropyThreshold((1, 2), ((1.0,), (3.0,)))) if "never change" in m]
    msgs = _warnings(caplog, EntropyThreshold((1, 2), ((0.0,), (3.0,))))
    assert any("layer 0: 2, layer 1: 1" in m for m in msgs), msgs


def test_threshold_above_log_n_is_warned(caplog):
    msgs = _warnings(caplog, EntropyThreshold((1, 2, 3), (1.0, 4.0)), native_k=4)
    assert any("[4.0] lie above log N = 2.0794" in m for m in msgs), msgs


@pytest.mark.parametrize("policy", [EntropyThreshold((1, 2, 4), (0.5, 1.5)), FixedTopK(3), TopP(0.5, max_k=4)])
def test_k_above_native_is_warned(caplog, policy):
    msgs = _warnings(caplog, policy)
    assert any("trained with top-2" in m for m in msgs), msgs


@pytest.mark.parametrize("policy", [FixedTopK(1), FixedTopK(2), EntropyThreshold((1, 2), (1.0,)), TopP(0.5),
                                    EntropyThreshold((2,), ()),  # one k value: fixed on purpose
                                    RatioSkip(0.3), EntropyThreshold((1, 2), (LOG8,))])
def test_sensible_policies_are_not_warned(caplog, policy):
    assert _warnings(caplog, policy) == []


def test_warned_once_per_policy_and_not_by_standalone_routing(caplog):
    policy = EntropyThreshold((1, 2), (5.0,))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        policy(torch.softmax(torch.randn(4, 8), -1))
        assert not caplog.records
        for _ in range(3):
            policy.validate_for(2, 8, 2)
    assert len(caplog.records) == 1


def test_patch_warns(caplog):
    model = tiny_model("mixtral")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with adaptk.patch(model, EntropyThreshold((1, 2), (9.0,))):
            pass
    assert "can never change k" in caplog.text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 3 * LOG8), min_size=1, max_size=3))
def test_constant_k_agrees_with_routing_at_both_ends(ths):
    """k is monotone in the entropy, so it can change on [0, log N] iff one-hot and uniform rows differ."""
    ths = sorted(ths)
    assume(all(abs(t - LOG8) > 1e-3 for t in ths))  # float32 rounding of log N itself
    policy = EntropyThreshold(tuple(range(1, len(ths) + 2)), tuple(ths))
    rows = torch.stack([torch.eye(8)[0], torch.full((8,), 1 / 8)])  # H = 0 and H = log 8
    k = policy(rows, native_k=8).k.tolist()
    const = policy.constant_k(0, 8, 8)
    assert (const is None) == (k[0] != k[1])
    if const is not None:
        assert k == [const, const]

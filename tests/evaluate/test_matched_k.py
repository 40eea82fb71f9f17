"""Matched average k: every rule's fit, verified by real patched runs, lands within 1%."""

from __future__ import annotations

import pytest
from calibrate.helpers import random_ids
from tiny_models import tiny_model

from adaptk.calibrate import collect_router_stats, match_avg_k
from adaptk.evaluate import WindowConfig
from adaptk.evaluate.sweep import rule_fitters
from adaptk.measure import measure


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("mixtral")
    ids = random_ids(256, seed=6)
    return model, ids, collect_router_stats(model, ids, window=64)


@pytest.mark.parametrize("rule", ["entropy_global", "entropy_per_layer", "entropy_quality_alloc", "top_p",
                                  "ratio_skip", "ratio_skip_per_layer"])
def test_rule_hits_target_on_patched_run(setup, rule):
    model, ids, stats = setup
    cfg = WindowConfig(64, 64)
    fit = rule_fitters(stats, (1, 2), [1.0, 0.5])[rule]
    res = match_avg_k(model, ids, fit, 1.5, lo=1.0, hi=2.0, cfg=cfg)
    assert res.within_tol and abs(res.achieved - 1.5) / 1.5 <= 0.01
    again = measure(model, res.policy, ids, cfg).average_k  # the reported number is a real run's
    assert again == pytest.approx(res.achieved)

"""Each calibration strategy on a tiny model with controlled routing (router statistics only)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import tiny_model

from adaptk.calibrate import BudgetNotMetError, CalibrateConfig, CalibrationError, calibrate, collect_router_stats
from adaptk.calibrate import strategies as S
from adaptk.calibrate.simulate import layer_k, simulated_avg_k, simulated_layer_avg_k
from adaptk.routing import EntropyThreshold, RatioSkip, TopP
from calibrate.helpers import controlled_mixtral, random_ids


@pytest.fixture(scope="module")
def model():
    return controlled_mixtral()


@pytest.fixture(scope="module")
def stats(model):
    return collect_router_stats(model, random_ids(512), window=64, max_tokens=400)


def test_collect_is_capped_and_controlled(stats):
    assert stats.tokens == 400 and len(stats.layers) == 2
    lay0, lay1 = stats.layers
    assert torch.allclose(lay0.entropy, torch.full((400,), math.log(8)), atol=1e-4)  # zero router: uniform
    assert float(lay1.entropy.mean()) < 0.5 * math.log(8)  # sharp router
    assert lay0.ranked.shape == (400, 8)
    assert torch.all(lay0.ranked[:, :-1] >= lay0.ranked[:, 1:] - 1e-7)


def test_theory_thresholds_follow_entropy(stats):
    pol = S.theory(stats, (1, 2), (0.9,))
    assert pol.thresholds == pytest.approx((0.9 * math.log(8),))
    k0, k1 = simulated_layer_avg_k(pol, stats)
    assert k0 == 2.0  # uniform layer: H = log N >= 0.9 log N
    assert k1 < 1.2  # sharp layer: mostly below


def test_percentile_distribution_global_and_per_layer(stats):
    pol = S.percentile_distribution(stats, (1, 2), (0.25, 0.75), per_layer=True)
    for lay in stats.layers[1:]:  # layer 1 has continuous entropies: exact shares
        k = layer_k(pol, lay)
        assert float((k == 1).float().mean()) == pytest.approx(0.25, abs=1 / 400)
    g = S.percentile_distribution(stats, (1, 2), (0.5, 0.5))
    assert isinstance(g.thresholds[0], float)
    with pytest.raises(CalibrationError, match="shares"):
        S.percentile_distribution(stats, (1, 2), (0.5, 0.6))


@pytest.fixture(scope="module")
def random_stats():
    return collect_router_stats(tiny_model("mixtral"), random_ids(512), window=64, max_tokens=400)


@pytest.mark.parametrize("target", [1.2, 1.5, 1.8])
def test_target_average_k_on_stats(random_stats, target):
    stats = random_stats
    for pol in (S.entropy_for_avg_k(stats, (1, 2), target, per_layer=True), S.top_p_for_avg_k(stats, target),
                S.ratio_skip_for_avg_k(stats, target, per_layer=True)):
        assert simulated_avg_k(pol, stats) == pytest.approx(target, rel=0.01), pol


def test_tied_entropies_cannot_be_split(stats):
    """Layer 0 routes uniformly: every token has the same entropy, so no threshold can give it a
    fractional average k; the fit gets as close as ties allow, and says nothing false."""
    pol = S.entropy_for_avg_k(stats, (1, 2), 1.5, per_layer=True)
    assert simulated_layer_avg_k(pol, stats)[0] in (1.0, 2.0)
    assert simulated_layer_avg_k(pol, stats)[1] == pytest.approx(1.5, rel=0.01)


def test_three_level_target(random_stats):
    stats = random_stats
    pol = S.entropy_for_avg_k(stats, (1, 2, 3), 2.2, per_layer=True)
    assert simulated_avg_k(pol, stats) == pytest.approx(2.2, rel=0.01)


def test_ratio_skip_median_rule(stats):
    pol = S.ratio_skip_median(stats)
    assert isinstance(pol.beta, tuple) and len(pol.beta) == 2
    assert pol.beta[0] == pytest.approx(1.0, abs=1e-4)  # uniform: w2/w1 = 1
    for b, lay in zip(pol.beta, stats.layers):
        ratio = lay.ranked[:, 1] / lay.ranked[:, 0]
        assert float((ratio >= b).float().mean()) >= 0.5


def test_unreachable_target_says_so(stats):
    with pytest.raises(BudgetNotMetError, match="outside") as info:
        S.top_p_for_avg_k(stats, 3.5)
    assert info.value.best == 2


def test_calibrate_records_provenance():
    ids = random_ids(512, seed=1)
    out = calibrate(tiny_model("mixtral"), ids, CalibrateConfig("percentile", target_avg_k=1.5, per_layer=True, window=64,
                                                max_tokens=256, quality_tokens=128))
    c = out.policy_file.calibration
    assert c.strategy == "percentile" and c.tokens == 256 and len(c.data_sha256) == 64
    assert c.forward_passes >= 2  # statistics + at least one verification run
    assert abs(c.measured["measured_average_k"] - 1.5) / 1.5 <= 0.01
    assert out.policy_file.model.num_experts == [8, 8]
    assert isinstance(out.policy, EntropyThreshold)


def test_quality_constrained_meets_budget(model):
    ids = random_ids(512, seed=2)
    out = calibrate(model, ids, CalibrateConfig("quality", max_ppl_increase=0.005, window=64, max_tokens=256,
                                                quality_tokens=128, max_passes=10, budget_scope="calibration"))
    d = out.details
    assert d["value"] <= 0.005 and out.policy_file.calibration.forward_passes <= 11
    assert out.policy._is_per_layer()
    kl = calibrate(model, ids, CalibrateConfig("quality", max_kl=0.01, window=64, max_tokens=256,
                                               quality_tokens=128, max_passes=8, budget_scope="calibration"))
    assert kl.details["metric"] == "kl" and kl.details["value"] <= 0.01


def test_config_rejects_bad_input():
    with pytest.raises(CalibrationError, match="strategy"):
        CalibrateConfig("magic")
    with pytest.raises(CalibrationError, match="needs a target"):
        CalibrateConfig("top_p")
    with pytest.raises(CalibrationError, match="exactly one"):
        CalibrateConfig("quality")
    with pytest.raises(CalibrationError, match="alphas"):
        CalibrateConfig("theory")


def test_peer_rules_types(stats):
    assert isinstance(S.top_p_for_avg_k(stats, 1.5), TopP)
    assert isinstance(S.ratio_skip_for_avg_k(stats, 1.5), RatioSkip)


def test_quality_budget_no_policy_meets_reports_best():
    model = tiny_model("qwen3_moe")  # native k 4, but only k in {1, 2} allowed: never the full model
    with pytest.raises(BudgetNotMetError, match="best found had kl") as info:
        calibrate(model, random_ids(256, seed=3), CalibrateConfig(
            "quality", max_kl=1e-9, k_values=(1, 2), window=64, max_tokens=128, quality_tokens=128, max_passes=6,
            budget_scope="calibration"))
    assert info.value.best["value"] > 1e-9 and info.value.best["average_k"] >= 1


def test_upper_bound_matches_a_plain_block_reference():
    from statistics import NormalDist

    import numpy as np

    from adaptk.calibrate.quality import upper_bound

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g) * 0.3 + 0.05
    x[::97] = float("nan")  # unscored positions are skipped
    mean, ub = upper_bound(x, block=64, confidence=0.9)
    d = x[torch.isfinite(x)].double().numpy()
    nb = len(d) // 64
    blocks = d[: nb * 64].reshape(nb, 64).mean(axis=1)
    ref = d.mean() + NormalDist().inv_cdf(0.9) * blocks.std(ddof=1) / np.sqrt(nb)
    assert mean == pytest.approx(d.mean()) and ub == pytest.approx(ref)
    assert upper_bound(x[:50], block=64, confidence=0.9)[1] == pytest.approx(float(x[:50][torch.isfinite(x[:50])].double().mean()))


def test_confidence_makes_the_quality_search_no_more_aggressive(model):
    ids = random_ids(512, seed=2)
    common = dict(max_ppl_increase=0.005, window=64, max_tokens=256, quality_tokens=256, max_passes=10,
                  budget_scope="calibration")
    point = calibrate(model, ids, CalibrateConfig("quality", confidence=None, **common))
    sure = calibrate(model, ids, CalibrateConfig("quality", confidence=0.95, **common))
    assert sure.details["upper_bound"] <= 0.005
    assert sure.details["upper_bound"] >= sure.details["value"]
    assert point.details["upper_bound"] == point.details["value"]
    assert sure.details["measured_average_k"] >= point.details["measured_average_k"] - 1e-9
    with pytest.raises(CalibrationError, match="confidence"):
        CalibrateConfig("quality", max_ppl_increase=0.01, confidence=1.5)

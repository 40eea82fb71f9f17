"""The ``random`` control rule: seeded, routing-blind token draws at fitted per-layer shares of k,
checked against a plain-Python splitmix64, through patch, policy files, calibrate and the sweep."""

import json
import math

import pytest
import torch
from calibrate.helpers import random_ids, random_text, saved_tiny_model
from tiny_models import tiny_model

import adaptk
from adaptk.calibrate import (
    STRATEGIES,
    CalibrateConfig,
    calibrate,
    collect_router_stats,
    entropy_for_avg_k,
    load_policy_file,
    save_policy_file,
    simulated_avg_k,
)
from adaptk.calibrate.simulate import layer_k, simulated_layer_avg_k
from adaptk.cli.main import main
from adaptk.errors import PolicyError
from adaptk.evaluate.sweep import DEFAULT_RULES, RULES
from adaptk.routing import policy_from_dict
from adaptk.rules import FitInputs, get_rule
from adaptk.rules.random import random_for_avg_k
from adaptk.rules.random_policy import RandomShares, draw_key, token_uniforms

CPU = torch.device("cpu")
M64 = (1 << 64) - 1


def splitmix64(key: int, t: int) -> int:
    """Vigna's splitmix64, output number t + 1 of the stream started at ``key``, in plain integers."""
    z = (key + (t + 1) * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def reference_k(policy: RandomShares, layer: int, num_tokens: int) -> list[int]:
    """k per position by the definition: k_values[#(c_i <= u)] with c the cumulative shares (float32)."""
    shares = policy.layer_shares(layer)
    cum = torch.tensor([sum(shares[: i + 1]) for i in range(len(shares) - 1)], dtype=torch.float32).tolist()
    key = draw_key(policy.seed, layer)
    us = [(splitmix64(key, t) >> 40) / 2**24 for t in range(num_tokens)]
    return [policy.k_values[sum(c <= u for c in cum)] for u in us]


def binomial_tol(p: float, n: int) -> float:
    return 4.5 * math.sqrt(p * (1 - p) / n) + 1 / n


def test_the_reference_is_splitmix64():
    assert splitmix64(0, 0) == 0xE220A8397B1DCDAF  # the first output of splitmix64 seeded with 0


@pytest.mark.parametrize(("seed", "layer"), [(0, 0), (7, 3), (2**40, 1)])
def test_draws_and_decisions_match_the_plain_reference(seed, layer):
    key = draw_key(seed, layer)
    assert token_uniforms(key, 300, CPU).tolist() == [(splitmix64(key, t) >> 40) / 2**24 for t in range(300)]
    policy = RandomShares((1, 2, 4), (0.25, 0.5, 0.25), seed=seed)
    assert policy.choose_k(torch.rand(300, 8), None, layer, 2).tolist() == reference_k(policy, layer, 300)


def test_realised_shares_match_the_requested_ones_on_20k_tokens():
    shares = ((0.2, 0.5, 0.3), (0.6, 0.1, 0.3), (0.0, 1.0, 0.0))
    policy = RandomShares((1, 2, 3), shares, seed=11)
    n = 20_000
    for layer, row in enumerate(shares):
        k = policy.choose_k(torch.rand(n, 8), None, layer, 2)
        for kv, p in zip((1, 2, 3), row):
            assert abs(float((k == kv).float().mean()) - p) <= binomial_tol(p, n), (layer, kv)


def test_decisions_depend_on_seed_layer_and_position_only():
    shares = (0.5, 0.5)
    a, b, c = RandomShares((1, 2), shares, seed=5), RandomShares((1, 2), shares, seed=5), RandomShares((1, 2), shares, 6)
    p1, p2 = torch.rand(4000, 8), torch.softmax(torch.randn(4000, 8) * 5, dim=-1)  # other routing, other entropy
    k = a.choose_k(p1, None, 0, 2)
    assert torch.equal(k, b.choose_k(p2, None, 0, 2, entropy=torch.zeros(4000)))
    assert torch.equal(k[:100], a.choose_k(p1[:100], None, 0, 2))  # a shorter batch: the same first positions
    assert float((k != c.choose_k(p1, None, 0, 2)).float().mean()) > 0.4  # expected 0.5
    assert float((k != a.choose_k(p1, None, 1, 2)).float().mean()) > 0.4


@pytest.fixture(scope="module")
def stats():
    return collect_router_stats(tiny_model("mixtral", seed=0), random_ids(2048), window=64, max_tokens=2048)


@pytest.mark.parametrize("per_layer", [False, True])
def test_the_fit_takes_the_entropy_rule_s_per_layer_shares_and_hits_the_target(stats, per_layer):
    kv, target = (1, 2), 1.5
    policy = random_for_avg_k(FitInputs(stats, kv, per_layer=per_layer), target)
    entropy = entropy_for_avg_k(stats, kv, target, per_layer=per_layer)
    for i, lay in enumerate(stats.layers):
        k = layer_k(entropy, lay)
        assert policy.layer_shares(i) == pytest.approx([float((k == v).float().mean()) for v in kv], abs=1e-12)
    expected = sum(sum(k * s for k, s in zip(kv, policy.layer_shares(i))) for i in range(len(stats.layers)))
    assert expected / len(stats.layers) == pytest.approx(simulated_avg_k(entropy, stats), abs=1e-9)
    tokens = sum(lay.entropy.shape[0] for lay in stats.layers)
    assert abs(expected / len(stats.layers) - target) <= 2 / stats.layers[0].entropy.shape[0]
    assert abs(simulated_avg_k(policy, stats) - target) <= binomial_tol(0.5, tokens) + 2 / tokens
    if per_layer:
        assert simulated_layer_avg_k(entropy, stats) == pytest.approx([target] * len(stats.layers), abs=2e-3)


def test_policy_dict_round_trip_and_validation():
    for policy in (RandomShares((1, 2, 4), (0.25, 0.5, 0.25), seed=3),
                   RandomShares((1, 2), ((0.3, 0.7), (1.0, 0.0)), seed=0)):
        assert policy_from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert RandomShares((1, 2), (0.3, 0.7)).to_dict() == {"rule": "random", "k_values": [1, 2],
                                                          "shares": [0.3, 0.7], "seed": 0}
    for bad in [dict(k_values=(2, 1), shares=(0.5, 0.5)), dict(k_values=(1, 2), shares=(0.5, 0.6)),
                dict(k_values=(1, 2), shares=(0.5,)), dict(k_values=(1, 2), shares=(1.5, -0.5)),
                dict(k_values=(1, 2), shares=(0.5, 0.5), seed=-1)]:
        with pytest.raises(PolicyError):
            RandomShares(**bad)


def test_through_patch_the_k_histogram_is_the_policy_s():
    model = tiny_model("mixtral", seed=1)
    policy = RandomShares((1, 2), ((0.3, 0.7), (0.8, 0.2)), seed=2)
    ids = random_ids(512).view(8, 64)
    with torch.no_grad(), adaptk.patch(model, policy) as handle:
        model(ids)
        report = handle.stats()
    for lay in report.layers:
        ref = reference_k(policy, lay.layer, 512)
        assert lay.k_histogram[1:3] == [ref.count(1), ref.count(2)]
        share = policy.layer_shares(lay.layer)[0]
        assert abs(lay.k_histogram[1] / 512 - share) <= binomial_tol(share, 512)


def test_calibrate_strategy_random_and_its_policy_file(tmp_path):
    assert STRATEGIES[-1] == "random" and get_rule("random").policy is RandomShares
    model = tiny_model("mixtral", seed=0)
    out = calibrate(model, random_ids(1024), CalibrateConfig(strategy="random", target_avg_k=1.5, max_tokens=1024,
                                                             quality_tokens=512, window=64))
    assert isinstance(out.policy, RandomShares) and abs(out.details["measured_average_k"] - 1.5) <= 0.05
    path = save_policy_file(out.policy_file, tmp_path / "random.json")
    assert load_policy_file(path, model, strict=True).build_policy() == out.policy
    with pytest.raises(adaptk.calibrate.CalibrationError, match="needs a target"):
        CalibrateConfig(strategy="random")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    text = d / "text.txt"
    text.write_text(random_text(1200))
    return saved_tiny_model(d / "model"), str(text)


def test_cli_calibrate_strategy_random(saved, tmp_path, capsys):
    model, text = saved
    pol = tmp_path / "p.json"
    assert main(["calibrate", "--model", model, "--text-file", text, "--strategy", "random", "--target-fraction",
                 "75%", "--window", "32", "--max-tokens", "256", "--no-progress", "--out", str(pol)]) == 0
    assert "strategy: random" in capsys.readouterr().out
    assert json.loads(pol.read_text())["policy"]["rule"] == "random"


def test_cli_evaluate_sweeps_random(saved, tmp_path):
    assert "random" in RULES and "random" not in DEFAULT_RULES
    model, text = saved
    out = tmp_path / "rep"
    assert main(["evaluate", "--model", model, "--text-file", text, "--calib-tokens", "128", "--eval-tokens", "96",
                 "--match-tokens", "64", "--window", "32", "--stride", "16", "--no-progress", "--strategy",
                 "percentile", "--target-fraction", "75%", "--sections", "pareto", "--fractions", "0.75",
                 "--rules", "entropy_global,random", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["pareto"]["rows"]
    row = next(r for r in rows if r["rule"] == "random")
    assert row["policy"]["rule"] == "random" and row["target_avg_k"] == 1.5
    assert abs(row["calib_avg_k"] - 1.5) <= 0.15

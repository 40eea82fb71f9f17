"""Controls of the side-by-side sweep, each against a plain reference on a tiny Mixtral: random
tokens at a rule's realised per-layer shares, whole-layer static k, the slot-damage oracle, and
the fraction of the random-to-oracle gap a rule closes."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from calibrate.helpers import random_ids, random_text, saved_tiny_model
from tiny_models import tiny_model

import adaptk
from adaptk.calibrate import CalibrationError, collect_router_stats
from adaptk.cli.main import main
from adaptk.evaluate.controls import format_controls, gap_closed, oracle_control, random_control, realised_shares
from adaptk.evaluate.oracle import OracleShares, assign_k, quota, slot_damage
from adaptk.evaluate.sweep import SweepConfig, pareto_sweep
from adaptk.measure import WindowConfig, measure
from adaptk.models.registry import find_moe_layers
from adaptk.routing import EntropyThreshold
from adaptk.rules.random_policy import RandomShares

CFG = WindowConfig(64, 64)


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("mixtral", seed=0)
    ids = random_ids(2048, seed=4)
    return model, ids, collect_router_stats(model, ids, window=64)


# ---- shares and the gap, plain arithmetic ------------------------------------------------------

def test_realised_shares_are_the_histogram_s_fractions():
    kv, shares = realised_shares([[0, 30, 10], [0, 0, 40], [0, 40, 0]])
    assert kv == (1, 2) and shares == ((0.75, 0.25), (0.0, 1.0), (1.0, 0.0))
    kv, shares = realised_shares([[0, 1, 2, 1], [0, 0, 4]])
    assert kv == (1, 2, 3) and shares == ((0.25, 0.5, 0.25), (0.0, 1.0, 0.0))
    with pytest.raises(CalibrationError):
        realised_shares([[5, 0, 0]])


def test_gap_fraction_arithmetic():
    assert gap_closed(12.0, 11.0, 10.0) == pytest.approx(0.5)
    assert gap_closed(12.0, 12.0, 10.0) == 0.0 and gap_closed(12.0, 10.0, 10.0) == 1.0
    assert gap_closed(12.0, 13.0, 10.0) == pytest.approx(-0.5)  # worse than random tokens
    assert gap_closed(12.0, 11.0, 12.0) is None and gap_closed(12.0, 11.0, 12.5) is None


# ---- random at the rule's measured shares -------------------------------------------------------

def test_random_control_realises_the_rule_s_per_layer_shares_and_seeds_differ(setup):
    model, ids, stats = setup
    q = [float(torch.quantile(lay.entropy, p)) for lay, p in zip(stats.layers, (0.3, 0.7))]
    rule = EntropyThreshold((1, 2), ((q[0],), (q[1],)))  # per-layer thresholds: different shares per layer
    m = measure(model, rule, ids, CFG)
    hists = [lay.k_histogram for lay in m.report.layers]
    kv, shares = realised_shares(hists)
    assert shares[0] != shares[1]
    c = random_control(model, hists, ids, CFG, seeds=3)
    assert c["k_values"] == [1, 2] and c["seeds"] == [0, 1, 2] and len(set(c["ppls"])) == 3  # seeds differ
    assert c["ppl_min"] <= c["ppl_mean"] <= c["ppl_max"] and c["ppl_sd"] > 0
    n = 2048
    assert c["max_share_error"] <= 4 * (0.25 / n) ** 0.5  # binomial noise only
    assert c["eval_avg_k"] == pytest.approx(m.average_k, abs=0.05)
    for seed in range(3):  # each seed's run is RandomShares at exactly these shares
        ref = measure(model, RandomShares(kv, shares, seed), ids, CFG).ppl.ppl
        assert c["ppls"][seed] == pytest.approx(ref)


# ---- the oracle ------------------------------------------------------------------------------------

def test_quota_and_assign_k_against_brute_force():
    assert quota((0.3, 0.7), 10) == [3, 7] and sum(quota((1 / 3, 1 / 3, 1 / 3), 10)) == 10
    g = torch.Generator().manual_seed(0)
    damage = torch.rand(7, 2, generator=g)
    damage[:, 1] = 0.0
    k = assign_k(damage, (1, 2), [3, 4])
    best = min(itertools.combinations(range(7), 3), key=lambda s: float(damage[list(s), 0].sum()))
    assert sorted(torch.nonzero(k == 1).flatten().tolist()) == sorted(best)


def test_slot_damage_against_a_plain_loop():
    g = torch.Generator().manual_seed(1)
    outs, w = torch.randn(3, 5, 4, generator=g), torch.rand(5, 3, generator=g)
    for renorm in (True, False):
        d = slot_damage(outs, w, (1, 2, 3), renorm)
        for t in range(5):
            ys = []
            for k in (1, 2, 3):
                y = sum(w[t, r] * outs[r, t] for r in range(k))
                ys.append(y / w[t, :k].sum() if renorm else y)
            for v in range(3):
                assert float(d[t, v]) == pytest.approx(float((ys[2] - ys[v]).norm()), abs=1e-5)


def _first_layer_damage(model, policy, ids, bind=False):
    """Σ over tokens of ||y - y_native|| at the first MoE block (its input does not depend on the routing)."""
    block = find_moe_layers(model)[0].block
    got = []
    hook = block.register_forward_hook(lambda mod, args, out: got.append(out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            with adaptk.patch(model, adaptk.FixedTopK(2)):
                model(ids)
            if bind:
                with policy.bind(model), adaptk.patch(model, policy):
                    model(ids)
            else:
                with adaptk.patch(model, policy):
                    model(ids)
    finally:
        hook.remove()
    return float((got[1] - got[0]).norm(dim=-1).sum())


def test_oracle_is_never_worse_than_random_at_the_same_shares(setup):
    model, ids, _ = setup
    x = ids[:512].view(8, 64)
    shares = ((0.5, 0.5), (0.7, 0.3))
    oracle = _first_layer_damage(model, OracleShares((1, 2), shares), x, bind=True)
    for seed in range(5):
        assert oracle <= _first_layer_damage(model, RandomShares((1, 2), shares, seed), x)
    assert oracle < _first_layer_damage(model, RandomShares((1, 2), shares, 0), x)


def test_oracle_control_meets_the_shares_and_needs_its_binding(setup):
    model, ids, _ = setup
    c = oracle_control(model, [[0, 600, 1448], [0, 1000, 1048]], ids, CFG)
    assert c["analysis_only"] and c["max_share_error"] <= 1 / 64  # quota rounding per call only
    with pytest.raises(adaptk.errors.PolicyError, match="bind"), torch.no_grad(), \
            adaptk.patch(model, OracleShares((1, 2), ((0.5, 0.5),) * 2)):
        model(ids[:64].view(1, 64))


# ---- the sweep and the CLI --------------------------------------------------------------------------

def test_sweep_rows_carry_controls_and_the_gap(setup):
    model, ids, stats = setup
    cfg = SweepConfig(fractions=(0.75,), rules=("entropy_global", "layer_static"), controls=("random", "oracle"),
                      control_seeds=2, median_rule=False)
    sw = pareto_sweep(model, ids[:256], ids[:1024], stats, cfg, CFG, CFG, weights=[1.0, 0.5])
    rows = {r["rule"]: r for r in sw["rows"]}
    c = rows["entropy_global"]["controls"]
    assert set(c) == {"random", "oracle", "gap_closed"} and c["oracle"]["analysis_only"]
    assert c["gap_closed"] == gap_closed(c["random"]["ppl_mean"], rows["entropy_global"]["ppl"], c["oracle"]["ppl"])
    assert "controls" not in rows["layer_static"] and "controls" not in rows["fixed_k"]
    assert rows["layer_static"]["policy"]["rule"] == "layer_fixed_k" and rows["layer_static"]["eval_avg_k"] == 1.5
    sw["baseline_ppl"] = rows["fixed_k"]["ppl"]
    table = format_controls(sw)
    assert "entropy_global" in table and "analysis only" in table and "n=2" in table
    with pytest.raises(CalibrationError):
        SweepConfig(controls=("nope",))
    with pytest.raises(CalibrationError):
        SweepConfig(control_seeds=1)
    with pytest.raises(CalibrationError, match="unknown rules"):
        SweepConfig(control_rules=("nope",))
    only = SweepConfig(fractions=(0.75,), rules=("entropy_global", "top_p"), controls=("random",), control_seeds=2,
                       control_rules=("top_p",), median_rule=False)
    rows = {r["rule"]: r for r in pareto_sweep(model, ids[:256], ids[:512], stats, only, CFG, CFG)["rows"]}
    assert "controls" not in rows["entropy_global"] and set(rows["top_p"]["controls"]) == {"random"}


def test_cli_evaluate_prints_and_saves_the_controls(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(random_text(1200))
    model = saved_tiny_model(tmp_path / "model")
    out = tmp_path / "rep"
    assert main(["evaluate", "--model", model, "--text-file", str(text), "--calib-tokens", "128", "--eval-tokens",
                 "96", "--match-tokens", "64", "--window", "32", "--stride", "16", "--no-progress", "--strategy",
                 "percentile", "--target-fraction", "75%", "--sections", "pareto", "--fractions", "0.75",
                 "--rules", "entropy_global,layer_static", "--control-seeds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "controls at the rule's measured per-layer k shares" in printed and "layer_static" in printed
    rows = json.loads((out / "results.json").read_text())["pareto"]["rows"]
    row = next(r for r in rows if r["rule"] == "entropy_global")
    assert len(row["controls"]["random"]["ppls"]) == 2 and "gap_closed" in row["controls"]


def test_report_table_of_the_controls():
    from adaptk.report import tables

    row = {"rule": "entropy_global", "budget_fraction": 0.75, "eval_avg_k": 1.5, "ppl": 11.0,
           "controls": {"random": {"ppl_mean": 12.0, "ppl_min": 11.5, "ppl_max": 12.5, "ppls": [11.5, 12.5]},
                        "oracle": {"ppl": 10.5, "analysis_only": True}, "gap_closed": 2 / 3}}
    r = {"pareto": {"baseline_ppl": 10.0, "rows": [row, {"rule": "fixed_k", "budget_fraction": 1.0}]}}
    head, rows = tables.controls(r)
    assert "oracle (analysis only)" in head and rows == [
        ["entropy_global", "0.75", "1.500", "0.1000", "0.2000", "[0.1500, 0.2500]", "2", "0.0500", "0.67"]]
    assert tables.controls({"pareto": {"baseline_ppl": 1.0, "rows": [{"rule": "fixed_k"}]}}) is None

"""Intervals in the evaluation's rows and the comparison of rules, against direct calls of the
interval functions on the same runs."""

from __future__ import annotations

import math

import pytest
import torch

from adaptk.evaluate.evidence import compare_rules, increase_fields, verdict
from adaptk.evaluate.summary import comparison_lines
from adaptk.measure import IntervalConfig, PerplexityResult, difference_interval, paired_interval
from adaptk.report.tables import comparisons, pct_ci

CFG = IntervalConfig(n_boot=300)


def _run(loss: torch.Tensor) -> PerplexityResult:
    return PerplexityResult(float(loss.double().mean()), loss.numel(), 32, 16, 1.0, loss.float())


def _losses(shift: float, seed: int, n: int = 320) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.full((n,), 3.0) + shift + 0.05 * torch.randn(n, generator=g)


def test_increase_fields_are_the_paired_interval():
    base, cand = _run(_losses(0, 0)), _run(_losses(0.02, 1))
    f = increase_fields(base, cand, CFG)
    iv = paired_interval(base.token_loss, cand.token_loss, base.block_ids(), CFG)
    assert f["ppl_increase"] == cand.ppl / base.ppl - 1
    assert (f["ppl_increase_lo"], f["ppl_increase_hi"]) == (iv.lo, iv.hi)
    assert f["ppl_increase_lo"] < f["ppl_increase"] < f["ppl_increase_hi"]
    one_window = PerplexityResult(3.0, 31, 32, 16, 1.0, torch.full((31,), 3.0))
    assert increase_fields(one_window, one_window, CFG)["ppl_increase_lo"] is None


def test_compare_rules_picks_the_lowest_and_tests_the_difference():
    base = _run(_losses(0, 0))
    runs = [_run(_losses(s, i + 1)) for i, s in enumerate([0.05, 0.0005, 0.0, 0.2])]
    rows = [{"rule": name, "budget_fraction": 0.75, "target_avg_k": 1.5, "ppl": r.ppl}
            for name, r in zip(["far", "near", "best", "fixed"], runs)]
    rows[3].update(target_avg_k=None)  # a fixed-k reference row is not compared
    out = compare_rules(rows, runs, base, CFG)
    assert {c["best"] for c in out} == {"best"} and [c["other"] for c in out] == ["far", "near"]
    far = out[0]
    iv = difference_interval(base.token_loss, runs[2].token_loss, runs[0].token_loss, base.block_ids(), CFG)
    assert (far["difference"], far["lo"], far["hi"]) == (iv.estimate, iv.lo, iv.hi)
    assert far["difference"] < 0 and far["distinguishable"] and verdict(far) == "best is better than far"
    assert not out[1]["distinguishable"] and "not distinguishable" in verdict(out[1])
    lines = comparison_lines({"comparisons": out})
    assert "excludes 0" in lines[0] and "best is better than far" in lines[1]
    head, table = comparisons({"pareto": {"comparisons": out}})
    assert table[0][-1] == "better" and table[1][-1] == "not distinguishable"


def test_pct_ci_format():
    assert pct_ci(0.011, 0.0082, 0.0138) == "+1.10% [0.82, 1.38]"
    assert pct_ci(-0.0012, -0.0031, 0.0004) == "-0.12% [-0.31, 0.04]"
    assert pct_ci(0.02) == "+2.00%" and pct_ci(None) == "-"
    assert math.isclose(float(pct_ci(0.5).rstrip("%")), 50.0)


@pytest.mark.parametrize("method", ["bootstrap", "block_se"])
def test_identical_runs_are_not_distinguishable(method):
    base, a = _run(_losses(0, 0)), _run(_losses(0.01, 1))
    rows = [{"rule": n, "budget_fraction": 0.9, "target_avg_k": 1.8, "ppl": a.ppl} for n in ("x", "y")]
    (c,) = compare_rules(rows, [a, _run(a.token_loss.clone())], base, IntervalConfig(method=method, n_boot=200))
    assert (c["difference"], c["lo"], c["hi"]) == (0.0, 0.0, 0.0) and not c["distinguishable"]

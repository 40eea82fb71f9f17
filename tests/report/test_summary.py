"""The report's opening paragraph: every number in it is the results dict's, and it says whether
the recommended rule can be told apart from the others."""

from __future__ import annotations

import copy

from adaptk.report.summary import summary

R = {
    "meta": {"model": {"native_k": [2]}},
    "baseline": {"ppl": 89.045},
    "calibrated": {"average_k": 1.562, "compute_fraction": 0.781, "ppl_increase": 0.0098,
                   "ppl_increase_lo": 0.0075, "ppl_increase_hi": 0.0121, "note": None,
                   "policy_file": {"calibration": {"strategy": "quality",
                                                   "targets": {"max_ppl_increase": 0.01, "confidence": 0.95}}}},
    "pareto": {
        "rows": [{"rule": "entropy_quality_alloc", "budget_fraction": 0.75, "target_avg_k": 1.5, "ppl_increase": 0.011,
                  "ppl_increase_lo": 0.0086, "ppl_increase_hi": 0.0134},
                 {"rule": "entropy_quality_alloc", "budget_fraction": 0.6, "target_avg_k": 1.2, "ppl_increase": 0.02}],
        "comparisons": [
            {"budget_fraction": 0.75, "best": "entropy_quality_alloc", "other": "top_p", "difference": -0.0045,
             "lo": -0.0072, "hi": -0.0019, "distinguishable": True},
            {"budget_fraction": 0.75, "best": "entropy_quality_alloc", "other": "entropy_global",
             "difference": -0.0022, "lo": -0.0046, "hi": 0.0003, "distinguishable": False}]},
    "token_characteristics": {"claims": [{"metric": "loss", "verdict": "contradicted"},
                                         {"metric": "frequency_rank", "verdict": "inconclusive"}]},
}


def test_summary_states_cost_savings_and_distinguishability():
    s = summary(R)
    assert "saves 21.9% of the expert compute" in s and "+0.98% [0.75, 1.21]" in s
    assert "75% of native k" in s and "+1.10% [0.86, 1.34], the lowest there" in s
    assert "better than top_p" in s and "not distinguishable from entropy_global" in s
    assert "its interval holds the budget" in s and "guarantee there only" in s
    assert "contradict the paper's §6.4 on loss" in s and "frequency" not in s


def test_summary_when_the_rule_is_not_the_lowest_and_without_a_budget():
    r = copy.deepcopy(R)
    for c in r["pareto"]["comparisons"]:
        c["best"], c["other"] = "top_p", "entropy_quality_alloc" if c["other"] == "top_p" else c["other"]
    s = summary(r)
    assert "the lowest there is top_p, and entropy_quality_alloc is worse than it (difference +0.45 pp [0.19, 0.72])" in s
    r["calibrated"]["policy_file"] = None
    r["calibrated"]["note"] = "no per-layer entropy policy met the budget"
    assert summary(r).startswith("No policy met the calibration budget (no per-layer")


def test_summary_of_a_given_policy_has_no_rule_sentence():
    r = copy.deepcopy(R)
    r["calibrated"]["policy_file"] = {"policy": {"rule": "top_p"}, "calibration": None}
    s = summary(r)
    assert s.startswith("Recommended: the given policy.") and "side-by-side" not in s


def test_summary_of_a_heldout_budget_states_margin_and_heldout_estimate():
    r = copy.deepcopy(R)
    cal = r["calibrated"]["policy_file"]["calibration"]
    cal["targets"]["budget_scope"] = "heldout"
    cal["measured"] = {"margin": 0.0033, "searched_budget": 0.0067, "heldout_estimate": 0.0003,
                       "heldout_upper_bound": 0.0097, "transfer": {"folds_by": "28 documents in 4 folds"}}
    s = summary(r)
    assert "margin of 0.33 pp" in s and "accepted at 0.67% at 95% confidence" in s
    assert "held-out estimate of +0.03% (prediction bound +0.97%)" in s and "28 documents in 4 folds" in s
    assert "guarantee there only" not in s and "its interval holds the budget" in s

"""The paragraph a reader reads first: the recommended policy, what it saves, what it costs (with
its interval), whether it can be told apart from the other rules, and where the paper's token
claims fail. Sentences are built from the results dict only."""

from __future__ import annotations

from adaptk.report.tables import increase

# the side-by-side rule that shares a calibration strategy's fit (its per-layer allocation, its signal)
STRATEGY_RULE = {"quality": "entropy_quality_alloc", "top_p": "top_p", "ratio_skip_median": "ratio_skip_median"}


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _budget_sentence(cal: dict, pf: dict) -> str:
    targets = (pf.get("calibration") or {}).get("targets") or {}
    budget, conf = targets.get("max_ppl_increase"), targets.get("confidence")
    if budget is None:
        return ""
    lo, hi = cal.get("ppl_increase_lo"), cal.get("ppl_increase_hi")
    where = ("within" if cal["ppl_increase"] <= budget else "over") + f" the {budget:.1%} budget"
    if lo is not None and hi is not None:
        where += (" even at the upper end of its interval" if hi <= budget else
                  " across its whole interval" if lo > budget else
                  " on its point estimate, and its interval holds the budget (this sample cannot tell)")
    bound = f" at {conf:.0%} confidence" if conf else ""
    m = (pf.get("calibration") or {}).get("measured") or {}
    if targets.get("budget_scope") == "heldout" and m.get("heldout_upper_bound") is not None:
        return (f" The budget was to hold on documents the search did not see: leave-documents-out "
                f"({m['transfer']['folds_by']}) put a margin of {m['margin'] * 100:.2f} pp on it, so the search "
                f"accepted at {m['searched_budget']:.2%}{bound} on the calibration text, with a held-out estimate of "
                f"{m['heldout_estimate']:+.2%} (prediction bound {m['heldout_upper_bound']:+.2%}); on the "
                f"evaluation text the policy is {where}.")
    return (f" The budget was met on the calibration text{bound}; that is a guarantee there only, and on the "
            f"evaluation text the policy is {where}.")


def _rule_sentence(r: dict, rule: str, native: int) -> str:
    sweep = r.get("pareto") or {}
    rows = [x for x in sweep.get("rows") or [] if x.get("target_avg_k") is not None and x["rule"] == rule]
    if not rows:
        return ""
    frac = r["calibrated"]["average_k"] / native
    row = min(rows, key=lambda x: abs(x["budget_fraction"] - frac))
    b = row["budget_fraction"]
    cs = [c for c in sweep.get("comparisons") or [] if c["budget_fraction"] == b]
    head = (f" In the side-by-side sweep at the budget nearest its compute ({b:.0%} of native k), its rule "
            f"{rule} costs {increase(row)}")
    if not cs:
        return head + "."
    best = cs[0]["best"]
    if best == rule:
        better = [c["other"] for c in cs if c["distinguishable"]]
        same = [c["other"] for c in cs if not c["distinguishable"]]
        text = head + ", the lowest there"
        if better:
            text += f"; it is better than {', '.join(better)}"
        if same:
            text += f"; it is not distinguishable from {', '.join(same)}"
        return text + " (95% interval of the difference)."
    c = next((c for c in cs if c["other"] == rule), None)
    if c is None:
        return head + "."
    relation = "worse than" if c["distinguishable"] else "not distinguishable from"
    return (head + f"; the lowest there is {best}, and {rule} is {relation} it (difference "
            f"{-c['difference'] * 100:+.2f} pp [{-c['hi'] * 100:.2f}, {-c['lo'] * 100:.2f}]).")


def _claims_sentence(r: dict) -> str:
    claims = (r.get("token_characteristics") or {}).get("claims") or []
    bad = [c for c in claims if c["verdict"] == "contradicted"]
    good = [c for c in claims if c["verdict"] == "supported"]
    if not bad and not good:
        return ""
    parts = []
    if bad:
        parts.append("contradict the paper's §6.4 on " + " and ".join(c["metric"].replace("_", " ") for c in bad))
    if good:
        parts.append("agree with it on " + " and ".join(c["metric"].replace("_", " ") for c in good))
    return " The token tests " + "; they ".join(parts) + " (p < 0.001; details below)."


def summary(r: dict) -> str:
    """One paragraph of plain sentences."""
    cal, base = r["calibrated"], r["baseline"]
    pf = cal.get("policy_file") or {}
    native = r["meta"]["model"]["native_k"][0]
    if cal.get("note") and not pf:
        return (f"No policy met the calibration budget ({cal['note']}); the report shows native top-k in its "
                f"place.")
    strategy = (pf.get("calibration") or {}).get("strategy")
    what = f"the calibrated policy (strategy {strategy})" if strategy else "the given policy"
    text = (f"Recommended: {what}. It keeps {cal['average_k']:.3f} of {native} experts per token on average "
            f"and saves {_pct(1 - cal['compute_fraction'])} of the expert compute of native top-k on the "
            f"evaluation text, at a perplexity cost of {increase(cal)} (native perplexity {base['ppl']:.3f}; "
            f"95% paired interval over the evaluation windows).")
    text += _budget_sentence(cal, pf)
    if strategy in STRATEGY_RULE:
        text += _rule_sentence(r, STRATEGY_RULE[strategy], native)
    return text + _claims_sentence(r)

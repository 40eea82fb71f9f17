"""Intervals on the evaluation's perplexity increases, and which rules can be told apart.

Every run of the evaluation scores the same evaluation tokens as the native baseline, so each
increase carries a paired interval (``adaptk.measure.intervals``: blocks = the windows that score
the tokens). Rules at one budget are compared by the interval of the difference of their
increases: the lowest-cost rule is called better than another only where that interval
excludes 0; otherwise the two are reported as not distinguishable on this sample.
"""

from __future__ import annotations

import logging

from adaptk.measure import IntervalConfig, IntervalError, PerplexityResult, difference_interval, paired_interval

log = logging.getLogger(__name__)


def increase_fields(base: PerplexityResult, cand: PerplexityResult, cfg: IntervalConfig) -> dict:
    """{"ppl_increase", "ppl_increase_lo", "ppl_increase_hi"} of ``cand`` over ``base`` (same tokens);
    lo/hi are None where the text is too short for an interval (one window)."""
    out = {"ppl_increase": cand.ppl / base.ppl - 1.0, "ppl_increase_lo": None, "ppl_increase_hi": None}
    try:
        iv = paired_interval(base.token_loss, cand.token_loss, base.block_ids(), cfg)
    except IntervalError as exc:
        log.warning("no interval on the perplexity increase: %s", exc)
        return out
    return {**out, "ppl_increase_lo": iv.lo, "ppl_increase_hi": iv.hi}


def compare_rules(rows: list[dict], losses: list[PerplexityResult], base: PerplexityResult,
                  cfg: IntervalConfig) -> list[dict]:
    """At each budget of matched rules (rows with a ``target_avg_k``), the rule of lowest perplexity
    against every other one: the difference of increases (best minus other, so negative) with its
    interval and whether it excludes 0. ``losses`` are the rows' runs, in row order."""
    by_budget: dict[float, list[int]] = {}
    for i, r in enumerate(rows):
        if r.get("target_avg_k") is not None and r.get("budget_fraction") is not None:
            by_budget.setdefault(r["budget_fraction"], []).append(i)
    blocks = base.block_ids()
    if not blocks.numel() or int(blocks.max()) < 1:  # one window: nothing to compare with an interval
        return []
    out = []
    for budget in sorted(by_budget, reverse=True):
        idx = by_budget[budget]
        best = min(idx, key=lambda i: rows[i]["ppl"])
        for i in idx:
            if i == best:
                continue
            iv = difference_interval(base.token_loss, losses[best].token_loss, losses[i].token_loss, blocks, cfg)
            out.append({"budget_fraction": budget, "best": rows[best]["rule"], "other": rows[i]["rule"],
                        "difference": iv.estimate, "lo": iv.lo, "hi": iv.hi, "level": iv.level,
                        "distinguishable": iv.excludes_zero()})
    return out


def verdict(c: dict) -> str:
    """One comparison in words."""
    if c["distinguishable"]:
        return f"{c['best']} is better than {c['other']}"
    return f"{c['best']} and {c['other']} are not distinguishable"

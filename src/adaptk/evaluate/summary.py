"""The short plain-text table ``adaptk evaluate`` prints."""

from __future__ import annotations

from adaptk.calibrate import quality_summary
from adaptk.evaluate.controls import format_controls
from adaptk.evaluate.evidence import verdict
from adaptk.evaluate.sweep import format_table
from adaptk.report.tables import increase


def comparison_lines(sweep: dict) -> list[str]:
    """Per budget: the lowest-cost rule against the others, by the interval of the difference."""
    lines = []
    level = (sweep.get("interval") or {}).get("level", 0.95)
    for c in sweep.get("comparisons") or []:
        lines.append(f"  at {c['budget_fraction']:.0%} of native k: {verdict(c)} (difference "
                     f"{c['difference'] * 100:+.2f} pp [{c['lo'] * 100:.2f}, {c['hi'] * 100:.2f}])")
    if lines:
        lines.insert(0, f"rules compared (better only where the {level:.0%} interval of the difference excludes 0):")
    return lines


def downstream_line(d: dict) -> str:
    """The downstream section in one line: native and calibrated accuracy, their paired difference,
    and how many sweep policies differ from native."""
    rows = d["rows"]
    cal = next(x for x in rows if x["rule"] == "calibrated")
    line = (f"downstream {d['task']} on {d['source']} ({d['items']} items, chance {d['chance']:.0%}): native "
            f"{rows[0]['accuracy']:.1%}, calibrated {cal['accuracy']:.1%} ({cal['accuracy_difference'] * 100:+.1f} pp "
            f"[{cal['difference_lo'] * 100:.1f}, {cal['difference_hi'] * 100:.1f}] paired"
            + (f", McNemar p {cal['mcnemar_p']:.2g})" if cal.get("mcnemar_p") is not None else ")"))
    sweep = rows[2:]
    if sweep:
        line += f"; sweep policies that differ from native: {sum(x['distinguishable'] for x in sweep)} of {len(sweep)}"
    return line


def short_table(r: dict) -> str:
    m, b, c = r["meta"], r["baseline"], r["calibrated"]
    pol = (c.get("policy_file") or {}).get("policy")
    lines = [f"model {m.get('model_name', m['model']['architecture'])}: calib {m.get('calib_source')} "
             f"({m['calib_tokens']} tok), eval {m.get('eval_source')} ({m['eval_tokens']} tok), "
             f"window {m['window']} stride {m['stride']}",
             f"{'run':<18} {'ppl':>9} {'avg k':>6} {'compute':>8} {'tok/s':>8}",
             f"{'native top-k':<18} {b['ppl']:>9.3f} {b['average_k']:>6.3f} {b['compute_fraction']:>8.3f} "
             f"{b['tokens_per_second']:>8.0f}",
             f"{'calibrated':<18} {c['ppl']:>9.3f} {c['average_k']:>6.3f} {c['compute_fraction']:>8.3f} "
             f"{c['tokens_per_second']:>8.0f}   ({increase(c)} ppl)",
             f"policy: {pol}"]
    measured = ((c.get("policy_file") or {}).get("calibration") or {}).get("measured") or {}
    if "value" in measured and "metric" in measured:  # the budget the policy was calibrated to, next to the above
        lines.append(quality_summary(measured))
    if c.get("ppl_increase_lo") is not None:
        iv = m.get("interval") or {}
        half = 0.5 * (c["ppl_increase_hi"] - c["ppl_increase_lo"]) * 100
        how = {"bootstrap": "paired block bootstrap", "block_se": "paired block standard error"}.get(iv.get("method"), "")
        lines.append(f"interval: {iv.get('level', 0.95):.0%} {how} over the evaluation windows, half-width {half:.2f} pp")
    if c.get("note"):
        lines.append(f"note: {c['note']}")
    if r.get("pareto"):
        lines += ["", format_table(r["pareto"]), *comparison_lines(r["pareto"])]
        controls = format_controls(r["pareto"])
        if controls:
            lines += ["", controls]
    if r.get("downstream"):
        lines.append(downstream_line(r["downstream"]))
    return "\n".join(lines)

"""The short plain-text table ``adaptk evaluate`` prints."""

from __future__ import annotations

from adaptk.evaluate.controls import format_controls
from adaptk.evaluate.sweep import format_table


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
             f"{c['tokens_per_second']:>8.0f}   ({c['ppl_increase'] * 100:+.2f}% ppl)",
             f"policy: {pol}"]
    if c.get("note"):
        lines.append(f"note: {c['note']}")
    if r.get("pareto"):
        lines += ["", format_table(r["pareto"])]
        controls = format_controls(r["pareto"])
        if controls:
            lines += ["", controls]
    return "\n".join(lines)

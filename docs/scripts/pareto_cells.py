"""The side-by-side table of docs/pipeline.md from an ``adaptk evaluate`` results.json: one row per
adaptive rule, one column per budget, each cell the perplexity increase with its 95% paired
interval and the average k measured on the evaluation text. Bold: the lowest-cost rule of the
column and every rule that is not distinguishable from it (the interval of the difference holds 0).

    python docs/scripts/pareto_cells.py adaptk-report/results.json
"""

from __future__ import annotations

import argparse
import json

from adaptk.report.tables import increase


def cells(r: dict) -> str:
    p = r["pareto"]
    rows = [x for x in p["rows"] if x.get("target_avg_k") is not None and x["rule"] not in ("fixed_k",)
            and x["budget_fraction"] in p["fractions"]]
    rules = list(dict.fromkeys(x["rule"] for x in rows))
    fracs = sorted(p["fractions"], reverse=True)
    bold = {(c["budget_fraction"], c["best"]) for c in p.get("comparisons") or []}
    bold |= {(c["budget_fraction"], c["other"]) for c in p.get("comparisons") or [] if not c["distinguishable"]}
    out = ["| rule | " + " | ".join(f"{f:.0%} of native k" for f in fracs) + " |", "|---" * (len(fracs) + 1) + "|"]
    for rule in rules:
        line = []
        for f in fracs:
            x = next((x for x in rows if x["rule"] == rule and x["budget_fraction"] == f), None)
            cell = "-" if x is None else f"{increase(x)} (k {x['eval_avg_k']:.3f})"
            line.append(f"**{cell}**" if (f, rule) in bold else cell)
        out.append(f"| {rule} | " + " | ".join(line) + " |")
    others = [x for x in p["rows"] if x.get("target_avg_k") is None or x["budget_fraction"] not in p["fractions"]]
    others = [x for x in others if x["rule"] != "fixed_k"]
    if others:
        out += ["", "Other points: " + "; ".join(f"{x['rule']}: {increase(x)} at k {x['eval_avg_k']:.3f}"
                                                 for x in others) + "."]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="results.json of adaptk evaluate (with the pareto section)")
    print(cells(json.loads(open(ap.parse_args().results, encoding="utf-8").read())))


if __name__ == "__main__":
    main()

"""The side-by-side table of docs/pipeline.md from an ``adaptk evaluate`` results.json: one row per
adaptive rule, one column per budget, each cell the perplexity increase with its 95% paired
interval and the average k measured on the evaluation text. Bold: the lowest-cost rule of the
column and every rule that is not distinguishable from it (the interval of the difference holds 0).

    python docs/scripts/pareto_cells.py adaptk-report/results.json

With several results.json (the same sweep on models trained with different seeds), one column per
budget and seed, bold as above within each seed, and below the table what holds in every seed:
the rules in the lowest group (lowest, or not distinguishable from it) at each budget in all
seeds, and those worse than the lowest in all of them:

    python docs/scripts/pareto_cells.py eval-s0/results.json eval-s1/results.json --labels "seed 0,seed 1"
"""

from __future__ import annotations

import argparse
import json

from adaptk.report.tables import increase


def matched(p: dict) -> list[dict]:
    """The rows of adaptive rules matched to a budget of the sweep."""
    return [x for x in p["rows"] if x.get("target_avg_k") is not None and x["rule"] not in ("fixed_k",)
            and x["budget_fraction"] in p["fractions"]]


def lowest_group(p: dict) -> set[tuple[float, str]]:
    """(budget, rule) of the lowest-cost rule of each budget and of every rule not distinguishable from it."""
    bold = {(c["budget_fraction"], c["best"]) for c in p.get("comparisons") or []}
    return bold | {(c["budget_fraction"], c["other"]) for c in p.get("comparisons") or [] if not c["distinguishable"]}


def worse(p: dict) -> set[tuple[float, str]]:
    """(budget, rule) of the rules whose difference to the lowest-cost one excludes 0."""
    return {(c["budget_fraction"], c["other"]) for c in p.get("comparisons") or [] if c["distinguishable"]}


def others(p: dict) -> list[dict]:
    rest = [x for x in p["rows"] if x.get("target_avg_k") is None or x["budget_fraction"] not in p["fractions"]]
    return [x for x in rest if x["rule"] != "fixed_k"]


def mismatch(p: dict) -> float:
    """Largest relative distance of a matched rule's average k on the evaluation text to its target."""
    return max((abs(x["eval_avg_k"] / x["target_avg_k"] - 1) for x in matched(p)), default=0.0)


def cells(r: dict) -> str:
    p = r["pareto"]
    rows = matched(p)
    rules = list(dict.fromkeys(x["rule"] for x in rows))
    fracs = sorted(p["fractions"], reverse=True)
    bold = lowest_group(p)
    out = ["| rule | " + " | ".join(f"{f:.0%} of native k" for f in fracs) + " |", "|---" * (len(fracs) + 1) + "|"]
    for rule in rules:
        line = []
        for f in fracs:
            x = next((x for x in rows if x["rule"] == rule and x["budget_fraction"] == f), None)
            cell = "-" if x is None else f"{increase(x)} (k {x['eval_avg_k']:.3f})"
            line.append(f"**{cell}**" if (f, rule) in bold else cell)
        out.append(f"| {rule} | " + " | ".join(line) + " |")
    if others(p):
        out += ["", "Other points: " + "; ".join(f"{x['rule']}: {increase(x)} at k {x['eval_avg_k']:.3f}"
                                                 for x in others(p)) + "."]
    return "\n".join(out)


def seed_cells(results: list[dict], labels: list[str]) -> str:
    """One table over several seeds' sweeps (the same rules and budgets): a column per budget and
    seed, bold within each seed; then native perplexity, other points, average-k mismatch, and what
    holds in every seed."""
    ps = [r["pareto"] for r in results]
    fracs = sorted(set.intersection(*(set(p["fractions"]) for p in ps)), reverse=True)
    rules = list(dict.fromkeys(x["rule"] for p in ps for x in matched(p)))
    out = ["| rule | " + " | ".join(f"{f:.0%}, {lab}" for f in fracs for lab in labels) + " |",
           "|---" * (len(fracs) * len(labels) + 1) + "|"]
    for rule in rules:
        line = []
        for f in fracs:
            for p in ps:
                x = next((x for x in matched(p) if x["rule"] == rule and x["budget_fraction"] == f), None)
                cell = "-" if x is None else increase(x)
                line.append(f"**{cell}**" if (f, rule) in lowest_group(p) else cell)
        out.append(f"| {rule} | " + " | ".join(line) + " |")
    out += ["", "Native perplexity: " + ", ".join(f"{lab} {r['baseline']['ppl']:.2f}" for lab, r in zip(labels, results))
            + ". Largest average-k mismatch to the target: "
            + ", ".join(f"{lab} {mismatch(p):.2%}" for lab, p in zip(labels, ps)) + "."]
    for lab, p in zip(labels, ps):
        if others(p):
            out.append(f"Other points, {lab}: " + "; ".join(f"{x['rule']}: {increase(x)} at k {x['eval_avg_k']:.3f}"
                                                           for x in others(p)) + ".")
    out += ["", *agreement(ps, fracs, rules, labels)]
    return "\n".join(out)


def agreement(ps: list[dict], fracs: list[float], rules: list[str], labels: list[str]) -> list[str]:
    """Per budget, in words: the lowest rule of each seed, the rules in the lowest group in every
    seed, and the rules worse than the lowest in every seed."""
    lines = []
    for f in fracs:
        lows = [min((x for x in matched(p) if x["budget_fraction"] == f), key=lambda x: x["ppl"])["rule"] for p in ps]
        every = [r for r in rules if all((f, r) in lowest_group(p) for p in ps)]
        bad = [r for r in rules if all((f, r) in worse(p) for p in ps)]
        lowest = (f"{lows[0]} in every seed" if len(set(lows)) == 1
                  else ", ".join(f"{r} ({lab})" for r, lab in zip(lows, labels)))
        lines.append(f"- {f:.0%} of native k: lowest {lowest}; in the lowest group in every seed: "
                     f"{', '.join(every) or 'none'}; worse than the lowest in every seed: {', '.join(bad) or 'none'}.")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results.json of adaptk evaluate (with the pareto section); "
                                               "several: one per seed")
    ap.add_argument("--labels", help="comma-separated names of the results (default: seed 0, seed 1, ...)")
    args = ap.parse_args()
    results = [json.loads(open(path, encoding="utf-8").read()) for path in args.results]
    if len(results) == 1:
        print(cells(results[0]))
        return
    labels = args.labels.split(",") if args.labels else [f"seed {i}" for i in range(len(results))]
    if len(labels) != len(results):
        ap.error(f"--labels names {len(labels)} results, {len(results)} were given")
    print(seed_cells(results, labels))


if __name__ == "__main__":
    main()

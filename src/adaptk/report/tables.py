"""Rows of the report's tables, computed from the results dict only (shared by HTML and Markdown)."""

from __future__ import annotations


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def headline(r: dict) -> tuple[list[str], list[list[str]]]:
    b, c = r["baseline"], r["calibrated"]
    head = ["run", "ppl", "avg k", "compute fraction", "tokens/s"]
    rows = [["native top-k", fmt(b["ppl"]), fmt(b["average_k"]), fmt(b["compute_fraction"]), fmt(b["tokens_per_second"], 0)],
            ["calibrated policy", fmt(c["ppl"]), fmt(c["average_k"]), fmt(c["compute_fraction"]),
             fmt(c["tokens_per_second"], 0)]]
    return head, rows


def entropy(r: dict) -> tuple[list[str], list[list[str]]]:
    d = r["entropy_distribution"]["evaluation"]
    head = ["layer", "mean", "std", "min", "max", "mean/logN", "< 50% logN", "> 90% logN"]
    items = ([("all", d["pooled"])] if d.get("pooled") else []) + [(str(x["layer"]), x) for x in d["layers"]]
    rows = [[n, fmt(x["mean"]), fmt(x["std"]), fmt(x["min"]), fmt(x["max"]), fmt(x["mean_normalized"]),
             fmt(x["share_below_50pct_logN"]), fmt(x["share_above_90pct_logN"])] for n, x in items]
    return head, rows


def sensitivity(r: dict):
    rows = r.get("threshold_sensitivity")
    if not rows:
        return None
    return (["alpha", "threshold (nats)", "ppl", "ppl increase", "avg k", "compute"],
            [[fmt(x["alpha"], 2), fmt(x["threshold"]), fmt(x["ppl"]), fmt(x["ppl_increase"], 4), fmt(x["average_k"]),
              fmt(x["compute_fraction"])] for x in rows])


def granularity(r: dict):
    rows = r.get("granularity")
    if not rows:
        return None
    return (["k values", "target k", "calib k", "eval k", "ppl", "compute"],
            [[str(x["k_values"]) + (" (beyond native)" if x.get("beyond_native") else ""),
              fmt(x.get("target_avg_k")), fmt(x.get("calib_avg_k")), fmt(x.get("average_k")), fmt(x.get("ppl")),
              fmt(x.get("compute_fraction"))] for x in rows])


def layerwise(r: dict):
    return (["layer", "entropy mean", "entropy std", "avg k", "compute", "k histogram"],
            [[str(x["layer"]), fmt(x["entropy_mean"]), fmt(x["entropy_std"]), fmt(x["average_k"]),
              fmt(x["compute_fraction"]), str(x["k_histogram"])] for x in r["layerwise"]])


def tokens(r: dict):
    t = r.get("token_characteristics")
    if not t:
        return None
    return (["group", "tokens", "mean k", "mean freq rank", "median freq rank", "mean loss"],
            [[g, str(t[g]["tokens"]), fmt(t[g]["mean_k"]), fmt(t[g]["mean_frequency_rank"], 1),
              fmt(t[g]["median_frequency_rank"], 1), fmt(t[g]["mean_loss"])] for g in ("low_k", "high_k", "all")])


def pareto(r: dict):
    p = r.get("pareto")
    if not p:
        return None
    rows = sorted(p["rows"], key=lambda x: (-(x["budget_fraction"] or 0), x["rule"]))
    return (["rule", "budget", "target k", "matched k", "eval k", "ppl", "ppl increase", "compute", "tokens/s"],
            [[x["rule"], fmt(x["budget_fraction"], 2), fmt(x["target_avg_k"]), fmt(x["calib_avg_k"]),
              fmt(x["eval_avg_k"]), fmt(x["ppl"]), fmt(x["ppl"] / p["baseline_ppl"] - 1, 4),
              fmt(x["compute_fraction"]), fmt(x["tokens_per_second"], 0)] for x in rows])


def controls(r: dict):
    """Each adaptive cell next to random tokens at its measured per-layer k shares (over seeds) and the
    oracle at the same shares (analysis only: it runs every expert), with the gap the rule closes."""
    p = r.get("pareto")
    rows = [x for x in (p or {}).get("rows", []) if x.get("controls")]
    if not rows:
        return None
    inc = lambda v: fmt(v / p["baseline_ppl"] - 1, 4) if v is not None else "-"
    out = []
    for x in sorted(rows, key=lambda x: (-(x["budget_fraction"] or 0), x["rule"])):
        c = x["controls"]
        rnd, orc, gap = c.get("random") or {}, c.get("oracle") or {}, c.get("gap_closed")
        out.append([x["rule"], fmt(x["budget_fraction"], 2), fmt(x["eval_avg_k"]), inc(x["ppl"]),
                    inc(rnd.get("ppl_mean")), f"[{inc(rnd.get('ppl_min'))}, {inc(rnd.get('ppl_max'))}]" if rnd else "-",
                    str(len(rnd.get("ppls", []))) if rnd else "-", inc(orc.get("ppl")),
                    fmt(gap, 2) if gap is not None else "-"])
    return (["rule", "budget", "eval k", "ppl increase", "random: mean", "random: [min, max]", "seeds",
             "oracle (analysis only)", "gap closed"], out)


SECTIONS = [("Headline", headline), ("Entropy distribution (§5.2)", entropy),
            ("Threshold sensitivity (§6.1)", sensitivity), ("k-value granularity (§6.2)", granularity),
            ("Layer-wise entropy and k (§6.3)", layerwise), ("Low-k vs high-k tokens (§6.4)", tokens),
            ("Side by side at matched average k", pareto),
            ("Controls at each rule's measured per-layer k shares (oracle: analysis only, no savings)", controls)]

"""Rows of the report's tables, computed from the results dict only (shared by HTML and Markdown)."""

from __future__ import annotations


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def pct_ci(est, lo=None, hi=None) -> str:
    """A relative increase with its interval in percent: ``+1.10% [0.82, 1.38]`` ("-" if unknown;
    the estimate alone where there is no interval, as in results of an older adaptk)."""
    if est is None:
        return "-"
    if lo is None or hi is None:
        return f"{est * 100:+.2f}%"
    return f"{est * 100:+.2f}% [{lo * 100:.2f}, {hi * 100:.2f}]"


def increase(x: dict, key: str = "ppl_increase") -> str:
    """``pct_ci`` of a row's ``key`` with its ``key_lo`` / ``key_hi``."""
    return pct_ci(x.get(key), x.get(f"{key}_lo"), x.get(f"{key}_hi"))


def headline(r: dict) -> tuple[list[str], list[list[str]]]:
    b, c = r["baseline"], r["calibrated"]
    head = ["run", "ppl", "ppl increase [95% CI]", "avg k", "compute fraction", "tokens/s"]
    rows = [["native top-k", fmt(b["ppl"]), "-", fmt(b["average_k"]), fmt(b["compute_fraction"]),
             fmt(b["tokens_per_second"], 0)],
            ["calibrated policy", fmt(c["ppl"]), increase(c), fmt(c["average_k"]), fmt(c["compute_fraction"]),
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
    return (["alpha", "threshold (nats)", "ppl", "ppl increase [95% CI]", "avg k", "compute"],
            [[fmt(x["alpha"], 2), fmt(x["threshold"]), fmt(x["ppl"]), increase(x), fmt(x["average_k"]),
              fmt(x["compute_fraction"])] for x in rows])


def granularity(r: dict):
    rows = r.get("granularity")
    if not rows:
        return None
    return (["k values", "target k", "calib k", "eval k", "ppl", "ppl increase [95% CI]", "compute"],
            [[str(x["k_values"]) + (" (beyond native)" if x.get("beyond_native") else ""),
              fmt(x.get("target_avg_k")), fmt(x.get("calib_avg_k")), fmt(x.get("average_k")), fmt(x.get("ppl")),
              increase(x), fmt(x.get("compute_fraction"))] for x in rows])


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


def token_tests(r: dict):
    t = (r.get("token_characteristics") or {}).get("tests")
    if not t:
        return None
    verdicts = {c["metric"]: c["verdict"] for c in r["token_characteristics"].get("claims") or []}
    return (["low-k vs high-k tokens", "Mann-Whitney U", "p", "rank-biserial r", "tokens (low, high)", "paper's claim"],
            [[m.replace("_", " "), fmt(x.get("u"), 1), "-" if x.get("p") is None else f"{x['p']:.2g}",
              fmt(x.get("rank_biserial")), f"{x.get('n_a')}, {x.get('n_b')}", verdicts.get(m, "-")]
             for m, x in t.items()])


def pareto(r: dict):
    p = r.get("pareto")
    if not p:
        return None
    rows = sorted(p["rows"], key=lambda x: (-(x["budget_fraction"] or 0), x["rule"]))
    return (["rule", "budget", "target k", "matched k", "eval k", "ppl", "ppl increase [95% CI]", "compute",
             "tokens/s"],
            [[x["rule"], fmt(x["budget_fraction"], 2), fmt(x["target_avg_k"]), fmt(x["calib_avg_k"]),
              fmt(x["eval_avg_k"]), fmt(x["ppl"]),
              increase(x) if "ppl_increase" in x else pct_ci(x["ppl"] / p["baseline_ppl"] - 1),
              fmt(x["compute_fraction"]), fmt(x["tokens_per_second"], 0)] for x in rows])


def comparisons(r: dict):
    cs = (r.get("pareto") or {}).get("comparisons")
    if not cs:
        return None
    return (["budget", "lowest-cost rule", "other rule", "difference (pp) [95% CI]", "verdict"],
            [[fmt(c["budget_fraction"], 2), c["best"], c["other"],
              f"{c['difference'] * 100:+.2f} [{c['lo'] * 100:.2f}, {c['hi'] * 100:.2f}]",
              "better" if c["distinguishable"] else "not distinguishable"] for c in cs])


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


def _pp(est, lo, hi) -> str:
    return f"{est * 100:+.1f} [{lo * 100:.1f}, {hi * 100:.1f}]"


def downstream(r: dict):
    d = r.get("downstream")
    if not d:
        return None
    return (["run", "budget", "avg k", "compute", "ppl increase [95% CI]", "accuracy [95% CI]",
             "vs native (pp) [95% CI]", "verdict"],
            [[x["rule"], fmt(x["budget_fraction"], 2), fmt(x.get("average_k")), fmt(x.get("compute_fraction")),
              increase(x), f"{x['accuracy'] * 100:.1f}% [{x['accuracy_lo'] * 100:.1f}, {x['accuracy_hi'] * 100:.1f}]",
              "-" if i == 0 else _pp(x["accuracy_difference"], x["difference_lo"], x["difference_hi"]),
              "-" if i == 0 else _verdict(x)]
             for i, x in enumerate(d["rows"])])


def _verdict(x: dict) -> str:
    word = "differs" if x["distinguishable"] else "not distinguishable"
    if x.get("mcnemar_p") is None:
        return word
    return f"{word} ({x['right_only_here']} vs {x['right_only_native']} items, McNemar p {x['mcnemar_p']:.2g})"


SECTIONS = [("Headline", headline), ("Entropy distribution (§5.2)", entropy),
            ("Threshold sensitivity (§6.1)", sensitivity), ("k-value granularity (§6.2)", granularity),
            ("Layer-wise entropy and k (§6.3)", layerwise), ("Low-k vs high-k tokens (§6.4)", tokens),
            ("The paper's token claims, tested (§6.4)", token_tests),
            ("Side by side at matched average k", pareto), ("Which rules can be told apart", comparisons),
            ("Controls at each rule's measured per-layer k shares (oracle: analysis only, no savings)", controls),
            ("Downstream accuracy at matched k", downstream)]

# what a section's table means, printed above it
NOTES = {
    "Side by side at matched average k": "Each perplexity increase is over the native top-k run on the same "
    "evaluation tokens, with its 95% paired interval (block bootstrap over the evaluation windows).",
    "Which rules can be told apart": "At each budget the rule of lowest perplexity against every other rule: the "
    "difference of their perplexity increases in percentage points, with its 95% paired interval. A rule is "
    "called better than another only where that interval excludes 0; otherwise the two are not distinguishable "
    "on this sample, whatever their point estimates say.",
    "Downstream accuracy at matched k": "Multiple choice among 4 built from the evaluation text's test split "
    "(last word of a sentence for prose, next line for code; distractors from the same document, matched in "
    "token count), the choice of highest summed log-likelihood. Accuracy with its 95% Wilson interval; the "
    "difference to native top-k on the same items with Newcombe's 95% paired score interval, and the items only "
    "this run or only native gets right with the exact McNemar p-value of that split; a run differs from native "
    "only where the interval excludes 0 and p < 0.05. Average k, "
    "compute and perplexity increase are the same policy's on the perplexity tokens.",
    "The paper's token claims, tested (§6.4)": "Two-sided Mann-Whitney U tests of the low-k against the high-k "
    "quarter of tokens; rank-biserial r < 0: low-k tokens tend to have the lower value. A claim is supported or "
    "contradicted only at p < 0.001 (the paper's level). Neighbouring tokens are not independent, so the p-values "
    "are optimistic; read the effect size.",
}


def notes(title: str, r: dict) -> list[str]:
    """The paragraphs printed above a section's table: its fixed note, then what the data say."""
    out = [NOTES[title]] if title in NOTES else []
    if title.startswith("The paper's token claims"):
        out += [c["text"] for c in (r.get("token_characteristics") or {}).get("claims") or []]
    return out

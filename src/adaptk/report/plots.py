"""PNG plots of a results dict (matplotlib, Agg backend). Each function returns PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _per_layer_grid(n: int):
    """One small panel per layer, up to 4 per row; the spare panels of the last row blanked.
    -> (figure, the n panels in order)."""
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    panels = list(axes.flat)
    for ax in panels[n:]:
        ax.axis("off")
    return fig, panels[:n]


def pareto(results: dict) -> bytes | None:
    sweep = results.get("pareto")
    if not sweep or not sweep.get("rows"):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    base = sweep.get("baseline_ppl")
    by_rule: dict[str, list] = {}
    for r in sweep["rows"]:
        lo, hi = r.get("ppl_increase_lo"), r.get("ppl_increase_hi")
        err = (r["ppl"] - base * (1 + lo), base * (1 + hi) - r["ppl"]) if base and lo is not None and hi is not None \
            else (0.0, 0.0)
        by_rule.setdefault(r["rule"], []).append((r["eval_avg_k"], r["ppl"], *err))
    for rule, pts in sorted(by_rule.items()):
        pts.sort()
        yerr = [[max(0.0, p[2]) for p in pts], [max(0.0, p[3]) for p in pts]]
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=yerr, marker="o", capsize=3, label=rule)
    ax.set_xlabel("average k (measured, evaluation text)")
    ax.set_ylabel("perplexity")
    ax.set_title("every rule at matched average k; bars: 95% paired interval of the increase over native", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def entropy_histograms(results: dict) -> bytes | None:
    hists = results.get("entropy_histograms") or []
    if not hists:
        return None
    fig, panels = _per_layer_grid(len(hists))
    for ax, h in zip(panels, hists):
        e = h["edges"]
        ax.bar(e[:-1], h["counts"], width=e[1] - e[0], align="edge")
        ax.set_title(f"layer {h['layer']}", fontsize=9)
        ax.set_xlabel("entropy (nats)", fontsize=8)
    fig.suptitle("routing entropy per layer (evaluation text, native routing)")
    return _png(fig)


def k_distribution(results: dict) -> bytes | None:
    cal = results.get("calibrated") or {}
    hist = cal.get("k_histogram")
    if not hist:
        return None
    total = sum(hist) or 1
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(range(len(hist)), [c / total for c in hist])
    ax.set_xlabel("k (experts kept)")
    ax.set_ylabel("share of token-layer decisions")
    ax.set_title("k distribution, calibrated policy")
    return _png(fig)


def layer_heatmap(results: dict) -> bytes | None:
    lw = results.get("layerwise") or []
    if not lw:
        return None
    width = max(len(r["k_histogram"]) for r in lw)
    data = [[c / max(1, sum(r["k_histogram"])) for c in r["k_histogram"]] + [0] * (width - len(r["k_histogram"]))
            for r in lw]
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(lw) + 1.5))
    im = ax.imshow(data, aspect="auto", cmap="viridis")
    ax.set_xticks(range(width))
    ax.set_xlabel("k")
    ax.set_ylabel("MoE layer")
    ax.set_yticks(range(len(lw)), [str(r["layer"]) for r in lw])
    ax.set_title("share of tokens at each k, per layer")
    fig.colorbar(im, ax=ax)
    return _png(fig)


def expert_usage(results: dict) -> bytes | None:
    usage = results.get("expert_usage") or []
    if not usage:
        return None
    fig, panels = _per_layer_grid(len(usage))
    for ax, u in zip(panels, usage):
        x = range(len(u["native"]))
        ax.bar([i - 0.2 for i in x], u["native"], width=0.4, label="native")
        ax.bar([i + 0.2 for i in x], u["policy"], width=0.4, label="policy")
        ax.set_title(f"layer {u['layer']}", fontsize=9)
    panels[0].legend(fontsize=7)
    fig.suptitle("tokens routed to each expert")
    return _png(fig)


PLOTS = {"pareto": pareto, "entropy_histograms": entropy_histograms, "k_distribution": k_distribution,
         "layer_heatmap": layer_heatmap, "expert_usage": expert_usage}

"""Controls for the side-by-side sweep: what a rule's cell is compared with at the same compute.

- ``random``: each MoE layer gives the same fraction of its tokens each k as the rule did in its
  measured run (its per-layer k histogram on the evaluation text), the tokens drawn at random
  (``RandomShares``), over several seeds: mean, min, max and standard deviation of perplexity.
- ``oracle`` (analysis only, no savings): the same per-layer shares, the tokens chosen by the
  exact damage of dropping their slots (``adaptk.evaluate.oracle``).
- the fraction of the random-to-oracle gap a rule closes: (ppl_random - ppl_rule) / (ppl_random - ppl_oracle),
  1 where the rule is as good as the oracle, 0 where it is no better than random tokens (above 1
  where it beats the oracle, which is greedy on each layer's output, not on the loss).

``layer_static`` (whole layers at a fixed k, no per-token signal) is a sweep rule of its own
(``adaptk.rules.layer_static``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
from torch import nn

from adaptk.calibrate import CalibrationError
from adaptk.evaluate.oracle import OracleShares
from adaptk.measure import WindowConfig, measure
from adaptk.rules.random_policy import RandomShares

CONTROLS = ("random", "oracle")
# rows that are baselines or controls themselves: no controls of their own
NOT_ADAPTIVE = ("fixed_k", "always_k-1", "random", "layer_static")


def realised_shares(layer_hists: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], tuple[tuple[float, ...], ...]]:
    """Per-layer k histograms (hist[k] = tokens that kept k experts) -> (the k values >= 1 any
    layer used, each layer's share of tokens at each of them). Tokens that kept no expert are
    left out (no rule here drops a token entirely)."""
    kv = tuple(k for k in range(1, max(len(h) for h in layer_hists)) if any(k < len(h) and h[k] for h in layer_hists))
    if not kv:
        raise CalibrationError("the rule's run kept no expert for any token: nothing to match a control to")
    rows = []
    for h in layer_hists:
        counts = [h[k] if k < len(h) else 0 for k in kv]
        total = sum(counts)
        rows.append(tuple(c / total for c in counts) if total else tuple(float(k == kv[-1]) for k in kv))
    return kv, tuple(rows)


def gap_closed(ppl_random: float, ppl_rule: float, ppl_oracle: float, eps: float = 1e-9) -> float | None:
    """(ppl_random - ppl_rule) / (ppl_random - ppl_oracle); None where the oracle is no better than random."""
    gap = ppl_random - ppl_oracle
    return (ppl_random - ppl_rule) / gap if gap > eps else None


def _share_error(report, kv, shares) -> float:
    """Largest gap between a run's per-layer shares of the k values ``kv`` and the asked-for ones."""
    err = 0.0
    for h, want in zip((r.k_histogram for r in report.layers), shares):
        counts = [h[k] if k < len(h) else 0 for k in kv]
        total = sum(counts) or 1
        err = max(err, *(abs(c / total - s) for c, s in zip(counts, want)))
    return err


def random_control(model: nn.Module, layer_hists, ids: torch.Tensor, cfg: WindowConfig, seeds: int) -> dict:
    """The random control of one rule's run on ids [L], over ``seeds`` seeds (0..seeds-1)."""
    kv, shares = realised_shares(layer_hists)
    runs = [measure(model, RandomShares(kv, shares, seed), ids, cfg) for seed in range(seeds)]
    ppls = [m.ppl.ppl for m in runs]
    return {"k_values": list(kv), "layer_shares": [list(s) for s in shares], "seeds": list(range(seeds)),
            "ppls": ppls, "ppl_mean": statistics.fmean(ppls), "ppl_min": min(ppls), "ppl_max": max(ppls),
            "ppl_sd": statistics.stdev(ppls) if len(ppls) > 1 else 0.0,
            "eval_avg_k": statistics.fmean(m.average_k for m in runs),
            "max_share_error": max(_share_error(m.report, kv, shares) for m in runs)}


def oracle_control(model: nn.Module, layer_hists, ids: torch.Tensor, cfg: WindowConfig) -> dict:
    """The oracle at one rule's per-layer shares on ids [L] (analysis only)."""
    kv, shares = realised_shares(layer_hists)
    pol = OracleShares(kv, shares)
    with pol.bind(model):
        m = measure(model, pol, ids, cfg)
    return {"k_values": list(kv), "ppl": m.ppl.ppl, "eval_avg_k": m.average_k, "analysis_only": True,
            "max_share_error": _share_error(m.report, kv, shares)}


def add_controls(model: nn.Module, rows: list[dict], ids: torch.Tensor, cfg: WindowConfig,
                 controls: Sequence[str], seeds: int, rules: Sequence[str] | None = None,
                 progress: bool = False) -> None:
    """Give every adaptive rule's row (with its measured ``layer_k_histogram``), or those of ``rules``,
    its controls, in place: ``row["controls"] = {"random": ..., "oracle": ..., "gap_closed": ...}``."""
    from tqdm.auto import tqdm

    todo = [r for r in rows if r["rule"] not in NOT_ADAPTIVE and not r["rule"].startswith("fixed_k")
            and r.get("layer_k_histogram") and (rules is None or r["rule"] in rules)]
    for r in tqdm(todo, desc="controls", disable=not progress):
        c: dict = {}
        if "random" in controls:
            c["random"] = random_control(model, r["layer_k_histogram"], ids, cfg, seeds)
        if "oracle" in controls:
            c["oracle"] = oracle_control(model, r["layer_k_histogram"], ids, cfg)
        if "random" in c and "oracle" in c:
            c["gap_closed"] = gap_closed(c["random"]["ppl_mean"], r["ppl"], c["oracle"]["ppl"])
        r["controls"] = c


def format_controls(sweep: dict) -> str:
    """The controls table: each adaptive rule's cell next to random tokens at its per-layer shares
    (mean [min, max] over seeds) and the oracle (analysis only), and the gap it closes."""
    rows = [r for r in sweep["rows"] if r.get("controls")]
    if not rows:
        return ""
    base = sweep.get("baseline_ppl")
    pct = lambda p: f"{(p / base - 1) * 100:+.2f}%" if base else f"{p:.3f}"
    head = (f"{'rule':<22} {'budget':>6} {'eval k':>7} {'rule ppl':>9} {'random ppl (seeds: mean [min, max])':>36} "
            f"{'oracle ppl*':>11} {'gap closed':>10}")
    lines = ["controls at the rule's measured per-layer k shares (ppl change vs native top-k; "
             "* oracle: analysis only, it runs every expert and saves nothing)", head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (-(r["budget_fraction"] or 0), r["rule"])):
        c = r["controls"]
        rnd = c.get("random")
        rs = (f"{pct(rnd['ppl_mean'])} [{pct(rnd['ppl_min'])}, {pct(rnd['ppl_max'])}] n={len(rnd['ppls'])}"
              if rnd else "-")
        orc = pct(c["oracle"]["ppl"]) if c.get("oracle") else "-"
        gap = c.get("gap_closed")
        gs = f"{gap * 100:.0f}%" if gap is not None else "-"
        lines.append(f"{r['rule']:<22} {r['budget_fraction']:>6.2f} {r['eval_avg_k']:>7.3f} {pct(r['ppl']):>9} "
                     f"{rs:>36} {orc:>11} {gs:>10}")
    return "\n".join(lines)

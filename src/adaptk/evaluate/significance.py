"""Tests of the paper's token claims (§6.4): do low-k tokens differ from high-k tokens?

``mann_whitney`` is the two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``) with the
rank-biserial correlation as its effect size: ``r = 2 U / (n1 n2) - 1`` for U of the first
sample, i.e. P(a > b) - P(a < b) over all pairs (ties count half): -1 when every value of ``a``
is below every value of ``b``, 0 when neither tends to be larger.

``token_claims`` turns the tests into plain statements against the paper: a claim is *supported*
where the difference goes the paper's way at p < 0.001 (its level), *contradicted* where it goes
the other way at that level, and *inconclusive* otherwise. Tokens of one text are not independent
(neighbours share context), so these p-values are optimistic; the effect size is the number to read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ALPHA = 0.001  # the paper's level

# metric -> (the direction the paper expects for low-k vs high-k tokens, what it says)
CLAIMS = {
    "loss": ("lower", "K=1 tokens are easier: lower next-token loss (per-token perplexity 2.1 vs 8.7, p < 0.001)"),
    "frequency_rank": ("lower", "confidently routed tokens are the common ones: a lower frequency rank"),
}


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> dict:
    """Two-sided Mann-Whitney U of samples a, b -> {"u", "p", "rank_biserial", "n_a", "n_b"}."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return {"u": None, "p": None, "rank_biserial": None, "n_a": int(a.size), "n_b": int(b.size)}
    res = mannwhitneyu(a, b, alternative="two-sided")
    u = float(res.statistic)
    p = float(res.pvalue)
    return {"u": u, "p": p if math.isfinite(p) else None, "rank_biserial": 2 * u / (a.size * b.size) - 1,
            "n_a": int(a.size), "n_b": int(b.size)}


def verdict(expected: str, test: dict, alpha: float = ALPHA) -> str:
    """'supported', 'contradicted' or 'inconclusive' for an expected direction of a vs b."""
    r, p = test.get("rank_biserial"), test.get("p")
    if r is None or p is None or p >= alpha or r == 0:
        return "inconclusive"
    return "supported" if (r < 0) == (expected == "lower") else "contradicted"


def token_claims(tc: dict) -> list[dict]:
    """The paper's §6.4 claims against ``token_characteristics`` output (with its ``tests``)."""
    out = []
    for metric, (expected, paper) in CLAIMS.items():
        test = (tc.get("tests") or {}).get(metric)
        if not test:
            continue
        v = verdict(expected, test)
        key = "mean_loss" if metric == "loss" else "mean_frequency_rank"
        lo, hi = tc["low_k"][key], tc["high_k"][key]
        name = "loss" if metric == "loss" else "frequency rank"
        p = test["p"]
        p_text = "p < 1e-300" if p == 0 else f"p = {p:.2g}"
        found = (f"low-k tokens have a {'lower' if lo < hi else 'higher'} mean {name} ({lo:.3g}) than high-k "
                 f"tokens ({hi:.3g}); Mann-Whitney {p_text}, rank-biserial r = {test['rank_biserial']:+.3f}")
        word = {"supported": "agrees with", "contradicted": "contradicts",
                "inconclusive": "neither confirms nor contradicts (not significant at p < 0.001)"}[v]
        out.append({"metric": metric, "paper": paper, "expected": expected, "verdict": v, "found": found,
                    "text": f"{found}: this {word} the paper ({paper})."})
    return out

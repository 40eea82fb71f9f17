"""The paper's descriptive tables, computed from recorded routing and patched-run counters.

- ``entropy_distribution`` (§5.2): mean, std, min, max of routing entropy, and the share of
  tokens below 50% and above 90% of log N, pooled and per layer.
- ``layerwise`` (§6.3): per layer mean entropy and the measured average k / k histogram.
- ``token_characteristics`` (§6.4): frequency rank and per-token loss of low-k vs high-k tokens,
  with a Mann-Whitney U test of each and the paper's claims checked (``significance``).
"""

from __future__ import annotations

import math

import torch

from adaptk.calibrate import RouterStats
from adaptk.evaluate.significance import mann_whitney, token_claims
from adaptk.routing.stats import PatchReport


def _summary(h: torch.Tensor, n: int) -> dict:
    log_n = math.log(n)
    h = h.double()
    return {"tokens": int(h.numel()), "mean": float(h.mean()), "std": float(h.std(unbiased=False)),
            "min": float(h.min()), "max": float(h.max()), "log_n": log_n,
            "share_below_50pct_logN": float((h < 0.5 * log_n).double().mean()),
            "share_above_90pct_logN": float((h > 0.9 * log_n).double().mean()),
            "mean_normalized": float(h.mean() / log_n)}


def entropy_distribution(stats: RouterStats) -> dict:
    layers = [{"layer": lay.index, "num_experts": lay.num_experts, **_summary(lay.entropy, lay.num_experts)}
              for lay in stats.layers]
    ns = {lay.num_experts for lay in stats.layers}
    pooled = _summary(stats.pooled_entropy(), ns.pop()) if len(ns) == 1 else None
    return {"pooled": pooled, "layers": layers}


def entropy_histograms(stats: RouterStats, bins: int = 30) -> list[dict]:
    out = []
    for lay in stats.layers:
        hi = math.log(lay.num_experts)
        counts = torch.histc(lay.entropy.float(), bins=bins, min=0.0, max=hi)
        out.append({"layer": lay.index, "edges": [hi * i / bins for i in range(bins + 1)],
                    "counts": [int(c) for c in counts]})
    return out


def layerwise(stats: RouterStats, report: PatchReport) -> list[dict]:
    return [{"layer": lay.index, "entropy_mean": float(lay.entropy.mean()),
             "entropy_std": float(lay.entropy.std(unbiased=False)), "average_k": r.average_k,
             "k_histogram": r.k_histogram, "compute_fraction": r.compute_fraction,
             "expert_counts": r.expert_counts}
            for lay, r in zip(stats.layers, report.layers)]


def frequency_ranks(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """Rank (0 = most frequent in ``ids``) of every token id -> [vocab] int64."""
    counts = torch.bincount(ids.reshape(-1), minlength=vocab)
    order = torch.argsort(counts, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks


def token_characteristics(ids: torch.Tensor, mean_k: torch.Tensor, token_loss: torch.Tensor,
                          ranks: torch.Tensor, quantile: float = 0.25) -> dict:
    """ids [L], mean_k [L] (k averaged over layers for each input token), token_loss [L-1]
    (loss of predicting token i+1 from position i), ranks [V]. Groups: the ``quantile`` of
    positions with the lowest and the highest mean k."""
    L = token_loss.shape[0]
    k = mean_k[:L].double()
    loss = token_loss.double()
    ok = torch.isfinite(loss)
    k, loss, tok = k[ok], loss[ok], ids[:L][ok]
    order = torch.argsort(k, stable=True)
    m = max(1, int(len(order) * quantile))
    groups = {"low_k": order[:m], "high_k": order[-m:], "all": order}
    out = {}
    for name, idx in groups.items():
        r = ranks[tok[idx]].double()
        out[name] = {"tokens": int(idx.numel()), "mean_k": float(k[idx].mean()),
                     "mean_frequency_rank": float(r.mean()), "median_frequency_rank": float(r.median()),
                     "mean_loss": float(loss[idx].mean())}
    out["corr_k_loss"] = float(torch.corrcoef(torch.stack([k, loss]))[0, 1]) if k.numel() > 2 else math.nan
    out["quantile"] = quantile
    lo, hi = groups["low_k"], groups["high_k"]
    out["tests"] = {"loss": mann_whitney(loss[lo].tolist(), loss[hi].tolist()),
                    "frequency_rank": mann_whitney(ranks[tok[lo]].double().tolist(), ranks[tok[hi]].double().tolist())}
    out["claims"] = token_claims(out)
    return out

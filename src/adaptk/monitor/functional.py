"""Routing-health metrics as pure functions on tensors (the functional twins of ``RoutingMonitor``).

Shapes: T tokens, N experts, B histogram bins. Every function takes counts or probabilities and
returns a Python float or a tensor; none keeps state. Logs are natural (nats) unless named.
Empty inputs (no tokens, no counts) give NaN rather than raising, so dashboards show a gap.
"""

from __future__ import annotations

import math

import torch

_TINY = torch.finfo(torch.float64).tiny


def _counts(counts: torch.Tensor) -> torch.Tensor:
    """[N] counts as float64 on CPU-or-device, validated to be one-dimensional."""
    c = torch.as_tensor(counts).double()
    if c.dim() != 1:
        raise ValueError(f"counts must be one-dimensional [N], got shape {tuple(c.shape)}")
    return c


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of ``p`` [..., N] -> [...] float64, 0·log 0 = 0."""
    p = torch.as_tensor(p).double()
    return -torch.where(p > 0, p * torch.log(p.clamp_min(_TINY)), torch.zeros_like(p)).sum(dim=-1)


def normalized(counts: torch.Tensor) -> torch.Tensor:
    """Counts [N] -> proportions [N] float64 (all NaN when the counts sum to 0)."""
    c = _counts(counts)
    total = c.sum()
    return c / total if total > 0 else torch.full_like(c, float("nan"))


def load_cv(counts: torch.Tensor) -> float:
    """Coefficient of variation of the expert loads: population std / mean of ``counts`` [N]."""
    c = _counts(counts)
    mean = c.mean()
    return float(c.std(correction=0) / mean) if mean > 0 else float("nan")


def max_over_mean(counts: torch.Tensor) -> float:
    """Max load over mean load (1 = perfectly balanced, N = everything on one expert)."""
    c = _counts(counts)
    mean = c.mean()
    return float(c.max() / mean) if mean > 0 else float("nan")


def gini(counts: torch.Tensor) -> float:
    """Gini coefficient of the loads [N]: 0 = equal, (N-1)/N = one expert takes everything."""
    c = torch.sort(_counts(counts)).values
    n, total = c.numel(), c.sum()
    if total <= 0:
        return float("nan")
    ranks = torch.arange(1, n + 1, dtype=torch.float64, device=c.device)
    return float((2.0 * (ranks * c).sum()) / (n * total) - (n + 1.0) / n)


def dead_fraction(counts: torch.Tensor) -> float:
    """Fraction of experts that received no token."""
    c = _counts(counts)
    return float((c == 0).double().mean()) if c.numel() else float("nan")


def effective_experts(counts: torch.Tensor) -> float:
    """exp(entropy of the load distribution): N when balanced, 1 when one expert takes all."""
    c = _counts(counts)
    return float(torch.exp(entropy(normalized(c)))) if c.sum() > 0 else float("nan")


def mutual_information(probs: torch.Tensor) -> float:
    """I(token; expert) = H(mean_t p_t) - mean_t H(p_t) for router distributions ``probs`` [T, N].

    0 when every token gets the same distribution; log N at most (confident and balanced)."""
    p = torch.as_tensor(probs).double()
    if p.dim() != 2:
        raise ValueError(f"probs must be [tokens, experts], got shape {tuple(p.shape)}")
    if p.shape[0] == 0:
        return float("nan")
    return mi_from_sums(p.sum(dim=0), float(entropy(p).sum()), p.shape[0])


def mi_from_sums(prob_sum: torch.Tensor, entropy_sum: float, tokens: int) -> float:
    """Mutual information from the sufficient statistics Σ_t p_t [N], Σ_t H(p_t) and T."""
    if tokens <= 0:
        return float("nan")
    mean_p = torch.as_tensor(prob_sum).double() / tokens
    return max(float(entropy(mean_p)) - entropy_sum / tokens, 0.0)


def entropy_histogram(entropies: torch.Tensor, num_experts: int, bins: int) -> torch.Tensor:
    """Counts [B] int64 of entropies [T] in ``bins`` equal bins over [0, log N] (clamped in)."""
    idx = entropy_bin_index(entropies, num_experts, bins)
    return torch.bincount(idx, minlength=bins)


def entropy_bin_index(entropies: torch.Tensor, num_experts: int, bins: int) -> torch.Tensor:
    """Bin index [T] int64 of each entropy in the fixed grid over [0, log N]."""
    top = math.log(num_experts) if num_experts > 1 else 1.0
    idx = torch.floor(entropies.double() / top * bins).long()
    return idx.clamp(0, bins - 1)


def overflow(counts: torch.Tensor, tokens: int, k: int, capacity_factor: float) -> int:
    """Assignments over capacity in one batch: Σ_e max(0, counts_e - C), with
    C = floor(capacity_factor · tokens · k / N) (Switch Transformer's expert capacity)."""
    c = _counts(counts)
    cap = math.floor(capacity_factor * tokens * k / c.numel())
    return int((c - cap).clamp_min(0).sum())


def _smoothed(counts: torch.Tensor, eps: float) -> torch.Tensor:
    c = _counts(counts)
    p = c / c.sum() if c.sum() > 0 else torch.full_like(c, 1.0 / max(c.numel(), 1))
    p = p + eps
    return p / p.sum()


def psi(expected: torch.Tensor, actual: torch.Tensor, eps: float = 1e-4) -> float:
    """Population stability index Σ (a - e) · ln(a / e) of two count vectors [B] (each is
    normalised, then smoothed by ``eps`` so empty bins stay finite)."""
    e, a = _smoothed(expected, eps), _smoothed(actual, eps)
    if e.shape != a.shape:
        raise ValueError(f"PSI needs two histograms of one shape, got {tuple(e.shape)} and {tuple(a.shape)}")
    return float(((a - e) * torch.log(a / e)).sum())


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint) of two count vectors [B]."""
    a, b = normalized(p), normalized(q)
    if a.shape != b.shape:
        raise ValueError(f"JS needs two histograms of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if torch.isnan(a).any() or torch.isnan(b).any():
        return float("nan")
    m = 0.5 * (a + b)
    js = float(entropy(m) - 0.5 * (entropy(a) + entropy(b)))
    return max(js, 0.0) / math.log(2.0)

"""Shannon entropy of router distributions, pure batched PyTorch.

Shapes: T tokens, N experts. Computed in float32 whatever the input dtype, with 0·log 0 = 0.
"""

from __future__ import annotations

import math

import torch

from adaptk.errors import RoutingInputError

_BASES = {"nats": 1.0, "bits": math.log(2.0)}


def routing_entropy(
    probs: torch.Tensor, base: str = "nats", normalized: bool = False
) -> torch.Tensor:
    """Entropy H(p) = -Σ p log p of each row of ``probs`` [T, N] -> [T] float32.

    ``base`` is "nats" (natural log, the unit of the paper's thresholds) or "bits".
    ``normalized=True`` divides by log N, so the result lies in [0, 1] whatever the base.
    Rows are used as given: pass probabilities (rows summing to 1), not logits.
    """
    if base not in _BASES:
        raise RoutingInputError(f"base must be one of {sorted(_BASES)}, got {base!r}")
    if probs.dim() != 2:
        raise RoutingInputError(f"probs must be [tokens, experts], got shape {tuple(probs.shape)}")
    p = probs.float()  # [T, N]
    h = entropy_nats(p)  # [T]
    if normalized:
        n = p.shape[-1]
        return h / math.log(n) if n > 1 else torch.zeros_like(h)
    return h if base == "nats" else h / _BASES[base]


def entropy_nats(probs: torch.Tensor) -> torch.Tensor:
    """The unchecked core of ``routing_entropy`` for hot paths: float32 probs [T, N] -> [T] nats."""
    return torch.special.entr(probs).sum(dim=-1)  # entr(x) = -x log x, entr(0) = 0


def tempered(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Re-temper a distribution: p_τ ∝ p^(1/τ), i.e. softmax(logits / τ) for a softmax router.

    [T, N] float32 -> [T, N] float32. τ = 1 returns ``probs`` unchanged.
    """
    if temperature == 1.0:
        return probs
    logp = torch.log(probs.float().clamp_min(torch.finfo(torch.float32).tiny))
    return torch.softmax(torch.where(probs > 0, logp, float("-inf")) / temperature, dim=-1)

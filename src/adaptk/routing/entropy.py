"""Shannon entropy of router distributions, pure batched PyTorch.

Shapes: T tokens, N experts. Computed in float32 whatever the input dtype, with 0·log 0 = 0.

Two entry points: ``routing_entropy`` (public) checks its input is a probability distribution
per row (finite, >= 0, summing to 1 within a tolerance of the input dtype) and raises
``RoutingInputError`` otherwise; ``entropy_nats`` is the unchecked core for the hot internal paths
that already hold softmax output (the patched router, policies on ``tempered`` output, training
health), where a NaN row must stay a NaN entropy (counted by the patch, routed with kmax).
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
    Rows must be probabilities (e.g. ``softmax(logits, -1)``): finite, >= 0 and summing to 1
    within ``sum_tolerance(dtype, N)``; anything else raises ``RoutingInputError``.
    """
    if base not in _BASES:
        raise RoutingInputError(f"base must be one of {sorted(_BASES)}, got {base!r}")
    if probs.dim() != 2:
        raise RoutingInputError(f"probs must be [tokens, experts], got shape {tuple(probs.shape)}")
    check_probabilities(probs)
    p = probs.float()  # [T, N]
    h = entropy_nats(p)  # [T]
    if normalized:
        n = p.shape[-1]
        return h / math.log(n) if n > 1 else torch.zeros_like(h)
    return h if base == "nats" else h / _BASES[base]


def sum_tolerance(dtype: torch.dtype, n: int) -> float:
    """How far from 1 a row of ``n`` probabilities stored as ``dtype`` may sum: rounding each
    entry costs up to eps/2 of it (eps of the dtype; the sum itself is taken in float32, at most
    n float32 roundings), with a factor 4 of headroom for the softmax's own error."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    return 4.0 * max(eps, n * torch.finfo(torch.float32).eps)


def check_probabilities(probs: torch.Tensor) -> None:
    """Raise ``RoutingInputError`` unless every row of ``probs`` [..., N] is a probability
    distribution: finite, >= 0, summing to 1 within ``sum_tolerance``."""
    if not probs.dtype.is_floating_point:
        raise RoutingInputError(f"probs must be a floating tensor of probabilities, got dtype {probs.dtype}; "
                                "pass softmax probabilities")
    if probs.numel() == 0:
        return
    p = probs.float()
    if not bool(torch.isfinite(p).all()):
        raise RoutingInputError("probs contain NaN or Inf; pass softmax probabilities of finite router logits")
    low = float(p.min())
    if low < 0:
        raise RoutingInputError(f"probs contain a negative value ({low:.4g}); pass softmax probabilities "
                                "(rows >= 0 summing to 1), not logits")
    n = p.shape[-1]
    err = (p.sum(dim=-1) - 1.0).abs()  # [...]
    worst = int(err.reshape(-1).argmax())
    tol = sum_tolerance(probs.dtype, n)
    if float(err.reshape(-1)[worst]) > tol:
        total = float(p.sum(dim=-1).reshape(-1)[worst])
        raise RoutingInputError(f"probs row {worst} sums to {total:.6g}, not 1 (tolerance {tol:.2g} for "
                                f"{str(probs.dtype).removeprefix('torch.')}); pass softmax probabilities "
                                "(softmax(logits, dim=-1)), not logits or unnormalised scores")


def entropy_nats(probs: torch.Tensor) -> torch.Tensor:
    """The unchecked core of ``routing_entropy`` for hot paths: float32 probs [T, N] -> [T] nats.

    No validation: the caller guarantees softmax output (NaN rows give NaN). Anything else
    (negative or unnormalised input) gives a meaningless value: use ``routing_entropy``."""
    return torch.special.entr(probs).sum(dim=-1)  # entr(x) = -x log x, entr(0) = 0


def tempered(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Re-temper a distribution: p_τ ∝ p^(1/τ), i.e. softmax(logits / τ) for a softmax router.

    [T, N] float32 -> [T, N] float32. τ = 1 returns ``probs`` unchanged.
    """
    if temperature == 1.0:
        return probs
    logp = torch.log(probs.float().clamp_min(torch.finfo(torch.float32).tiny))
    return torch.softmax(torch.where(probs > 0, logp, float("-inf")) / temperature, dim=-1)

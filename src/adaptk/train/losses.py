"""Router auxiliary losses as pure functions of router logits / probabilities.

Shapes: ``logits`` and ``probs`` are [T, N] (T tokens, N experts); ``indices`` is [T, K].
"""

from __future__ import annotations

import math

import torch


def switch_balance_loss(probs: torch.Tensor, indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch Transformer load-balancing loss (Fedus, Zoph & Shazeer 2021, eq. 4):
    ``alpha * N * sum_i f_i * P_i`` without ``alpha``, where ``f_i`` is the fraction of routing
    slots dispatched to expert i (top-K generalisation: the K choices of every token count, as in
    transformers' ``load_balancing_loss_func``) and ``P_i`` the mean router probability of expert i.
    Equals 1 for perfectly uniform routing. Gradient flows through ``P`` only."""
    t, k = indices.shape
    counts = torch.zeros(num_experts, dtype=probs.dtype, device=probs.device)
    counts.scatter_add_(0, indices.reshape(-1), torch.ones(t * k, dtype=probs.dtype, device=probs.device))
    f = counts / (t * k)  # [N]
    p = probs.mean(dim=0)  # [N]
    return num_experts * torch.sum(f * p)


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """Router z-loss (ST-MoE, Zoph et al. 2022, eq. 5): ``(1/T) sum_t (log sum_i exp x_ti)^2``.
    Penalises large router logits for numerical stability."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


def routing_entropy(probs: torch.Tensor, normalised: bool = False) -> torch.Tensor:
    """Per-token Shannon entropy of the routing distribution, [T, N] -> [T] (nats, or divided by
    ``log N`` when ``normalised``)."""
    h = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1)
    return h / math.log(probs.shape[-1]) if normalised else h


def entropy_regulariser(probs: torch.Tensor) -> torch.Tensor:
    """Entropy regularisation term ``-mean_t H(p_t)`` (the usual entropy bonus, e.g. Williams &
    Peng 1991; used on MoE gates in e.g. Mixture-of-Experts with Expert Choice / DSelect-k
    literature). ``loss += coef * entropy_regulariser(probs)``: a positive coef spreads the routing
    distribution (higher entropy), a negative coef sharpens it (and can collapse routing)."""
    return -routing_entropy(probs).mean()

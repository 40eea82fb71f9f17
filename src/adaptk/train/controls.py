"""Training-time routing controls as pure functions (schedules, noise, capacity, bias balancing)."""

from __future__ import annotations

import math

import torch


def linear_schedule(step: int, total: int, start: float, end: float) -> float:
    """``start`` at step 0 to ``end`` at step ``total`` (clamped), linear."""
    if total <= 0:
        return end
    frac = min(max(step / total, 0.0), 1.0)
    return start + (end - start) * frac


def temperature(step: int, total_steps: int, start: float, end: float) -> float:
    """Gate temperature tau(step) (softmax(logits / tau)), annealed linearly over training; tau=1 is
    the native router. Temperature-annealed gating as in e.g. Nie et al. 2021 (EvoMoE, "dense-to-
    sparse gate", eq. 3)."""
    return linear_schedule(step, total_steps, start, end)


def sparsity_k(step: int, target_k: int, num_experts: int, dense_steps: int, sparsify_steps: int) -> int:
    """Delayed sparsification (EvoMoE, Nie et al. 2021, dense-to-sparse gate): route to all N
    experts for ``dense_steps``, then anneal k linearly from N down to ``target_k`` over
    ``sparsify_steps`` (rounded to the nearest integer), then keep ``target_k``."""
    if step < dense_steps:
        return num_experts
    k = linear_schedule(step - dense_steps, sparsify_steps, float(num_experts), float(target_k))
    return int(min(num_experts, max(target_k, round(k))))


def input_jitter(hidden: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiplicative input jitter (Switch Transformer, Fedus et al. 2021, sec. 2.4 / Appendix D):
    ``x * U(1-eps, 1+eps)`` elementwise. [T, H] -> [T, H]."""
    if eps <= 0:
        return hidden
    noise = torch.empty_like(hidden).uniform_(1.0 - eps, 1.0 + eps, generator=generator)
    return hidden * noise


def logit_noise(logits: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise on the router logits (noisy top-k gating, Shazeer et al. 2017, eq. 4, with a
    fixed noise scale). [T, N] -> [T, N]."""
    if std <= 0:
        return logits
    return logits + std * torch.randn(logits.shape, dtype=logits.dtype, device=logits.device, generator=generator)


def expert_capacity(num_tokens: int, k: int, num_experts: int, capacity_factor: float) -> int:
    """Switch Transformer expert capacity (Fedus et al. 2021, eq. 3, top-k form):
    ``ceil(capacity_factor * tokens * k / N)``."""
    return int(math.ceil(capacity_factor * num_tokens * k / num_experts))


def capacity_keep(indices: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Which routing slots fit in their expert's capacity, first come first served in slot-major
    order (every token's 1st choice before any 2nd choice, tokens in order; Switch/GShard
    dispatch). [T, K] int -> [T, K] bool; a dropped slot's expert output is not used."""
    t, k = indices.shape
    order = indices.t().reshape(-1)  # [K*T] slot-major
    onehot = torch.nn.functional.one_hot(order, num_experts)  # [K*T, N]
    position = (onehot.cumsum(dim=0) * onehot).sum(dim=-1) - 1  # [K*T] rank within its expert
    keep = position < capacity
    return keep.reshape(k, t).t()


def aux_free_bias_update(bias: torch.Tensor, load: torch.Tensor, speed: float) -> torch.Tensor:
    """Auxiliary-loss-free load balancing (DeepSeek-V3, Liu et al. 2024, sec. 2.1.2): after each
    step, ``b_i <- b_i + gamma * sign(mean_load - load_i)``: overloaded experts get a lower
    selection bias, underloaded ones a higher. The bias only shifts the top-k selection, never the
    gate weights. [N], [N] -> [N]."""
    load = load.to(bias.dtype)
    return bias + speed * torch.sign(load.mean() - load)

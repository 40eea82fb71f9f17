"""Synthetic MoE layer inputs: an experts module in transformers' layout and routed tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adaptk.bench.config import KMix, LayerShape


def router_config(shape: LayerShape):
    """A ``MixtralConfig`` of the layer shape (experts run by grouped_mm, transformers' default)."""
    import transformers

    config = transformers.MixtralConfig(
        hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_local_experts=shape.num_experts, num_experts_per_tok=shape.top_k,
    )
    config._experts_implementation = "grouped_mm"
    return config


def make_experts(shape: LayerShape, dtype: torch.dtype, device: torch.device, seed: int) -> torch.nn.Module:
    """A transformers ``MixtralExperts`` (gate_up [N, 2I, H], down [N, H, I]) of ``shape``."""
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    experts = MixtralExperts(router_config(shape))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in experts.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)
    return experts.to(device=device, dtype=dtype).eval()


@dataclass
class RoutedTokens:
    """hidden [T, H]; router [N, H]; native top-k index/weights [T, K]."""

    hidden: torch.Tensor
    router: torch.Tensor
    index: torch.Tensor
    weights: torch.Tensor


def make_tokens(shape: LayerShape, dtype: torch.dtype, device: torch.device, seed: int) -> RoutedTokens:
    g = torch.Generator().manual_seed(seed + 1)
    hidden = torch.randn(shape.tokens, shape.hidden, generator=g).to(device=device, dtype=dtype)
    router = (torch.randn(shape.num_experts, shape.hidden, generator=g) * shape.hidden**-0.5).to(device, dtype)
    probs = torch.softmax((hidden @ router.t()).float(), dim=-1)  # [T, N]
    weights, index = torch.topk(probs, shape.top_k, dim=-1)  # [T, K], best first
    weights = (weights / weights.sum(-1, keepdim=True)).to(dtype)
    return RoutedTokens(hidden, router, index, weights)


def k_per_token(mix: KMix, tokens: int, seed: int) -> torch.Tensor:
    """[T] int64: k of each token, in the proportions of ``mix``, in a seeded random order."""
    ks: list[int] = []
    for k, frac in mix.fractions:
        ks += [k] * round(frac * tokens)
    ks = (ks + [mix.fractions[-1][0]] * tokens)[:tokens]
    perm = torch.randperm(tokens, generator=torch.Generator().manual_seed(seed + 2))
    return torch.tensor(ks, dtype=torch.long)[perm]


def apply_k(index: torch.Tensor, weights: torch.Tensor, k: torch.Tensor, num_experts: int):
    """Keep each token's first k slots: dropped slots get the sentinel N and weight 0."""
    keep = torch.arange(index.shape[1], device=index.device) < k.to(index.device).unsqueeze(-1)  # [T, K]
    return torch.where(keep, index, num_experts), torch.where(keep, weights, torch.zeros_like(weights))


def flop_ratio(k: torch.Tensor, native_k: int) -> float:
    """FLOP-ideal time ratio Σk / (T · native k)."""
    return float(k.sum()) / (k.numel() * native_k)

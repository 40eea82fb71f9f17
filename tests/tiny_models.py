"""Tiny randomly initialised MoE models, one per supported transformers family (no downloads).

Dimensions are multiples of 8 so that grouped_mm's 16-byte stride rule holds.
"""

from __future__ import annotations

import pytest
import torch
import transformers

COMMON = dict(
    vocab_size=64,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)

# family name -> (config class name, extra config kwargs)
TINY: dict[str, tuple[str, dict]] = {
    "mixtral": ("MixtralConfig", dict(intermediate_size=32, num_local_experts=8, num_experts_per_tok=2)),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        dict(intermediate_size=32, moe_intermediate_size=16, shared_expert_intermediate_size=32,
             num_experts=8, num_experts_per_tok=4, norm_topk_prob=False, decoder_sparse_step=1),
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        dict(intermediate_size=32, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=4,
             norm_topk_prob=True, head_dim=8),
    ),
    "olmoe": ("OlmoeConfig", dict(intermediate_size=16, num_experts=16, num_experts_per_tok=8)),
    "deepseek_v2": (
        "DeepseekV2Config",
        dict(intermediate_size=32, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=4,
             num_key_value_heads=4, n_shared_experts=1, first_k_dense_replace=0, n_group=4, topk_group=2,
             topk_method="group_limited_greedy", routed_scaling_factor=1.5, kv_lora_rank=16,
             q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8),
    ),
    "deepseek_v3": (
        "DeepseekV3Config",
        dict(intermediate_size=32, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=4,
             num_key_value_heads=4, n_shared_experts=1, first_k_dense_replace=1, n_group=4, topk_group=2, norm_topk_prob=True,
             routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8,
             qk_nope_head_dim=8, v_head_dim=8),
    ),
    "gpt_oss": (
        "GptOssConfig",
        dict(intermediate_size=32, num_local_experts=8, num_experts_per_tok=4, head_dim=8,
             layer_types=["sliding_attention", "full_attention"], sliding_window=16),
    ),
    "phimoe": ("PhimoeConfig", dict(intermediate_size=32, num_local_experts=8, num_experts_per_tok=2)),
    "granitemoe": ("GraniteMoeConfig", dict(intermediate_size=32, num_local_experts=8, num_experts_per_tok=2)),
    "jamba": (
        "JambaConfig",
        dict(intermediate_size=32, num_experts=8, num_experts_per_tok=2, expert_layer_period=2,
             expert_layer_offset=1, attn_layer_period=2, attn_layer_offset=0, mamba_d_state=8,
             mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=8, use_mamba_kernels=False),
    ),
    "ernie4_5_moe": (
        "Ernie4_5_MoeConfig",
        dict(intermediate_size=32, moe_intermediate_size=16, moe_num_experts=8, moe_k=2,
             moe_num_shared_experts=1, moe_layer_start_index=0, moe_layer_interval=1, head_dim=8),
    ),
    "glm4_moe": (
        "Glm4MoeConfig",
        dict(intermediate_size=32, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=4,
             n_shared_experts=1, first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True,
             routed_scaling_factor=1.8, head_dim=8),
    ),
}


# the adaptk family of each tiny model: a test that builds one whose family the installed
# transformers predates (MoEFamily.min_transformers) is skipped, as adaptk refuses such models
ADAPTK_FAMILY = {
    "mixtral": "mixtral", "qwen2_moe": "qwen-moe", "qwen3_moe": "qwen-moe", "olmoe": "qwen-moe",
    "deepseek_v2": "deepseek-v2", "deepseek_v3": "deepseek-v3", "gpt_oss": "gpt-oss", "phimoe": "phimoe",
    "granitemoe": "granitemoe", "jamba": "jamba", "ernie4_5_moe": "ernie4.5-moe", "glm4_moe": "deepseek-v3",
}


def unavailable(family: str) -> str | None:
    """Why adaptk refuses the tiny model ``family`` under the installed transformers, or None."""
    from adaptk.models.families import FAMILIES
    from adaptk.models.registry import family_unavailable

    return family_unavailable(next(f for f in FAMILIES if f.name == ADAPTK_FAMILY[family]))


def tiny_model(family: str, seed: int = 0, experts_implementation: str | None = None, **overrides):
    """A tiny causal LM of ``family`` with random weights, in eval mode (the test is skipped
    where adaptk refuses the family under the installed transformers: ``unavailable``)."""
    why = unavailable(family)
    if why is not None:
        pytest.skip(why)
    cfg_name, extra = TINY[family]
    cfg_cls = getattr(transformers, cfg_name)
    kwargs = {**COMMON, **extra, **overrides}
    config = cfg_cls(**kwargs)
    if experts_implementation is not None:
        config._experts_implementation = experts_implementation
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    _randomise_routers(model)
    return model.eval()


def _randomise_routers(model: torch.nn.Module) -> None:
    """Routers are zero-initialised in several families: give them spread-out logits so routing
    decisions are not ties, and non-zero correction biases where a family has them."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gate.weight", "router.weight")) and p.dim() == 2 and p.shape[0] <= 64:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.05)


# weight regimes for the bit-exactness tests: how the tiny model's weights are drawn
REGIMES = ("default", "normal", "peaked", "biased")
# families whose routers rank with a bias: (where it sits on the router, parameter or buffer)
ROUTER_BIAS = {"gpt_oss": "bias", "deepseek_v3": "e_score_correction_bias", "glm4_moe": "e_score_correction_bias",
               "ernie4_5_moe": "moe_statics.e_score_correction_bias"}
# an expert width that is not a multiple of torch's vector loop (16 float32 lanes: two AVX2
# registers), so elementwise ops on [rows, I] tensors have scalar tails; still a multiple of 8
ODD_WIDTH = dict(intermediate_size=24, moe_intermediate_size=24)


def regimes_for(family: str) -> tuple[str, ...]:
    """The weight regimes that apply to ``family`` ("biased" only where its router has a bias)."""
    return tuple(r for r in REGIMES if r != "biased" or family in ROUTER_BIAS)


def reweight(model: torch.nn.Module, family: str, regime: str, seed: int = 99) -> torch.nn.Module:
    """Redraw the weights of a tiny model in place, in one of ``REGIMES``:

    - "default": as ``tiny_model`` made them (transformers' init, routers spread out);
    - "normal": every parameter, router biases and correction biases included, N(0, 0.2);
    - "peaked": "normal", with every router weight scaled by 20 (near one-hot softmax);
    - "biased": "normal", with the router's bias drawn N(0, 2) (large next to its logits).
    """
    from adaptk.models import find_moe_layers

    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if regime == "default":
        return model
    g = torch.Generator().manual_seed(seed)
    layers = find_moe_layers(model)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.2)
        for layer in layers:
            if regime == "peaked":
                layer.router.weight.mul_(20)
            elif regime == "biased":
                tensors = {**dict(layer.router.named_parameters()), **dict(layer.router.named_buffers())}
                bias = tensors[ROUTER_BIAS[family]]
                bias.copy_(torch.randn(bias.shape, generator=g) * 2)
    return model

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

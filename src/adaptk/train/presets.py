"""Model presets: small transformers causal LMs (random init) that train on a 2-core CPU."""

from __future__ import annotations

from dataclasses import dataclass

COMMON = dict(num_hidden_layers=4, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=512, tie_word_embeddings=False, rope_theta=10000.0)


@dataclass(frozen=True)
class Preset:
    config_class: str  # transformers config class name
    kwargs: dict
    description: str
    moe: bool = True
    recipe: dict | None = None  # CLI defaults of `adaptk train --preset NAME` (the shipped recipe)


PRESETS: dict[str, Preset] = {
    "mixtral-mini": Preset(
        "MixtralConfig",
        dict(intermediate_size=192, num_local_experts=8, num_experts_per_tok=2, router_jitter_noise=0.0,
             output_router_logits=False),
        "MixtralForCausalLM, 4 layers, hidden 128, 8 experts (width 192), top-2",
        # the recipe of the shipped default model (docs/train.md: a small negative entropy term
        # keeps every layer's mean normalised routing entropy below 0.9)
        recipe=dict(steps=700, threads=1, entropy_coef=-0.008),
    ),
    "olmoe-mini": Preset(
        "OlmoeConfig",
        dict(intermediate_size=32, num_experts=64, num_experts_per_tok=8, norm_topk_prob=False,
             output_router_logits=False),
        "OlmoeForCausalLM, 4 layers, hidden 128, 64 experts (width 32), top-8",
    ),
    "qwen-moe-mini": Preset(
        "Qwen2MoeConfig",
        dict(intermediate_size=256, moe_intermediate_size=32, shared_expert_intermediate_size=128,
             num_experts=60, num_experts_per_tok=4, norm_topk_prob=False, decoder_sparse_step=1,
             output_router_logits=False),
        "Qwen2MoeForCausalLM, 4 layers, hidden 128, 60 experts (width 32) top-4 + shared expert (width 128)",
    ),
    "dense-mini": Preset(
        "MistralConfig",
        dict(intermediate_size=384),
        "MistralForCausalLM, 4 layers, hidden 128, MLP width 384 (= 2 x mixtral-mini expert width: same active parameters)",
        moe=False,
        recipe=dict(steps=700, threads=1),
    ),
}


def build_model(preset: str, vocab_size: int, seed: int, overrides: dict | None = None):
    """A randomly initialised causal LM of ``preset`` (float32, train mode)."""
    import torch
    import transformers

    p = PRESETS[preset]
    cfg_cls = getattr(transformers, p.config_class)
    ids = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)  # <|endoftext|> is token 0
    config = cfg_cls(**{**COMMON, **p.kwargs, **ids, "vocab_size": vocab_size, **(overrides or {})})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    return model.float().train()

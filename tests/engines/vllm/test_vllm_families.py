"""Qwen2-MoE (shared expert, raw weights), Qwen3-MoE (renormalised) and OLMoE in vLLM: an entropy
policy routes every MoE layer, and the rows counted at the kernel are Σ k, below the native pairs."""

import json
import shutil

import pytest
import torch
import transformers
from test_vllm_offline import _run

from adaptk.assets import default_model_path
from adaptk.calibrate import make_policy_file, save_policy_file
from adaptk.routing import EntropyThreshold

pytestmark = pytest.mark.vllm

# hidden and expert widths multiples of 32 (vLLM's CPU experts kernel)
FAMILIES = {
    "Qwen2MoeForCausalLM": ("Qwen2MoeConfig", dict(intermediate_size=128, moe_intermediate_size=64,
                                                   shared_expert_intermediate_size=128, num_experts=8,
                                                   num_experts_per_tok=4, norm_topk_prob=False)),
    "Qwen3MoeForCausalLM": ("Qwen3MoeConfig", dict(intermediate_size=128, moe_intermediate_size=64, num_experts=8,
                                                   num_experts_per_tok=4, norm_topk_prob=True, head_dim=32)),
    "OlmoeForCausalLM": ("OlmoeConfig", dict(intermediate_size=64, num_experts=16, num_experts_per_tok=8)),
}


def _model(tmp_path, arch):
    tok = default_model_path()
    cls, extra = FAMILIES[arch]
    cfg = getattr(transformers, cls)(vocab_size=json.loads((tok / "config.json").read_text())["vocab_size"],
                                     hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                     max_position_embeddings=512, bos_token_id=0, eos_token_id=0,
                                     architectures=[arch], **extra)
    torch.manual_seed(0)
    model = getattr(transformers, arch)(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gate.weight"):
                p.mul_(20)  # peaked routers: confident and unsure tokens both
    out = tmp_path / "model"
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok / f, out / f)
    k = cfg.num_experts_per_tok
    policy = EntropyThreshold.from_fractions([1, 2, k], [0.3, 0.6], cfg.num_experts)
    return out, str(save_policy_file(make_policy_file(model, policy, {"strategy": "manual"}), tmp_path / "p.json"))


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_entropy_policy_in_vllm(tmp_path, arch):
    model, policy = _model(tmp_path, arch)
    proc, out = _run(tmp_path, model=model, ADAPTK_POLICY=policy)
    assert out is not None, proc.stderr[-3000:]
    assert len(out["layers"]) == 2
    for layer in out["layers"]:
        assert layer["tokens"] > 0
        assert layer["executed_pairs"] == sum(k * c for k, c in enumerate(layer["k_histogram"])) < layer["native_pairs"]

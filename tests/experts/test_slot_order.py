"""Keeping every slot, the variable-K back-end gives transformers' own experts output bit for bit,
at expert widths whose elementwise ops have scalar tails in torch's vector loops."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import ODD_WIDTH, reweight, tiny_model
from transformers.integrations.moe import grouped_mm_experts_forward

from adaptk.experts import variable_k_experts_forward
from adaptk.models import find_moe_layers


def _experts(family, impl):
    model = reweight(tiny_model(family, experts_implementation=impl, **ODD_WIDTH), family, "normal")
    return find_moe_layers(model)[0].experts


def _full_routing(experts, t, k, seed):
    """Every token keeps k distinct experts, softmax weights: no sentinel."""
    g = torch.Generator().manual_seed(seed)
    n = experts.num_experts
    index = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(t)])  # [T, K]
    weights = torch.randn(t, k, generator=g).softmax(-1)
    width = experts.gate_up_proj.shape[1 if experts.is_transposed else -1]
    hidden = torch.randn(t, width, generator=g)
    return hidden, index, weights


@settings(max_examples=20, deadline=None)
@given(family=st.sampled_from(["gpt_oss", "mixtral", "olmoe"]), t=st.integers(1, 40), k=st.integers(1, 4),
       seed=st.integers(0, 2**16), grad=st.booleans())
def test_slot_order_is_grouped_mm_bit_for_bit(family, t, k, seed, grad):
    experts = _experts(family, "grouped_mm")
    hidden, index, weights = _full_routing(experts, t, k, seed)
    with torch.set_grad_enabled(grad):
        ref = grouped_mm_experts_forward(experts, hidden, index, weights)
        out = variable_k_experts_forward(experts, hidden, index, weights, order="slot")
    assert torch.equal(out, ref), f"max |diff| {(out - ref).abs().max().item():.3g}"
    if grad:  # the autograd path (no in-place writes) keeps the graph
        assert out.requires_grad


@pytest.mark.parametrize("family", ["gpt_oss", "mixtral", "olmoe"])
def test_expert_order_is_the_eager_loop_bit_for_bit(family):
    experts = _experts(family, "eager")
    hidden, index, weights = _full_routing(experts, 33, 2, 3)
    with torch.no_grad():
        ref = experts(hidden, index, weights)  # the module's own eager loop
        out = variable_k_experts_forward(experts, hidden, index, weights, order="expert")
    assert torch.equal(out, ref)

"""The padded and grouped-by-k batching strategies compute what the variable-K back-end computes."""

from __future__ import annotations

import torch

from adaptk.bench.config import LayerShape
from adaptk.bench.layer import transformers_backend
from adaptk.bench.synthetic import apply_k, make_experts, make_tokens
from adaptk.experts.strategies import grouped_by_k_experts_forward, padded_experts_forward
from adaptk.experts.variable_k import variable_k_experts_forward

SHAPE = LayerShape("t", 32, 48, 8, 4, 40)


def _case(seed=0):
    experts = make_experts(SHAPE, torch.float32, torch.device("cpu"), seed)
    tok = make_tokens(SHAPE, torch.float32, torch.device("cpu"), seed)
    k = torch.randint(1, 5, (SHAPE.tokens,), generator=torch.Generator().manual_seed(seed))
    index, weights = apply_k(tok.index, tok.weights, k, SHAPE.num_experts)
    return experts, tok.hidden, index, weights


@torch.no_grad()
def test_strategies_match_backend():
    experts, x, index, weights = _case()
    ref = variable_k_experts_forward(experts, x, index, weights)
    torch.testing.assert_close(padded_experts_forward(experts, x, index, weights), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grouped_by_k_experts_forward(experts, x, index, weights), ref, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_grouped_by_k_handles_sentinels_anywhere():
    experts, x, index, weights = _case(1)
    perm = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(i)) for i in range(x.shape[0])])
    index2, weights2 = index.gather(1, perm), weights.gather(1, perm)
    ref = variable_k_experts_forward(experts, x, index, weights)
    torch.testing.assert_close(grouped_by_k_experts_forward(experts, x, index2, weights2), ref, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_transformers_backends_on_sentinel_inputs_match():
    experts, x, index, weights = _case(2)
    ref = variable_k_experts_forward(experts, x, index, weights)
    for name in ("eager", "grouped_mm", "batched_mm"):
        out = transformers_backend(name)(experts, x, index, weights)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6, msg=name)
    assert experts.config._experts_implementation == "grouped_mm" and not experts._is_expert_parallel

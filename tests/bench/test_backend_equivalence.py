"""The variable-K back-end against transformers' own back-ends on the same inputs: bit for bit
(same arithmetic order) in fp32 and bf16, over random shapes and k mixes, including experts that
receive no token and one expert that receives every token. Sentinel slots are fed to
transformers as it handles expert-parallel sentinels (eager skips them, grouped_mm masks them).
"""

from __future__ import annotations

import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
from transformers.models.mixtral.modeling_mixtral import MixtralExperts

from adaptk.experts.strategies import grouped_by_k_experts_forward, padded_experts_forward
from adaptk.experts.variable_k import variable_k_experts_forward


def _experts(hidden: int, inter: int, n: int, k: int, dtype: torch.dtype, seed: int) -> MixtralExperts:
    cfg = transformers.MixtralConfig(hidden_size=hidden, intermediate_size=inter, num_local_experts=n,
                                     num_experts_per_tok=k)
    cfg._experts_implementation = "grouped_mm"
    ex = MixtralExperts(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ex.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return ex.to(dtype).eval()


def reference(experts, x, index, weights, order):
    sentinel = bool((index >= experts.num_experts).any())
    saved = experts._is_expert_parallel
    experts._is_expert_parallel = sentinel
    try:
        if order == "expert":
            experts.config._experts_implementation = "eager"
            return experts(x, index, weights)
        return ALL_EXPERTS_FUNCTIONS["grouped_mm"](experts, x, index, weights)
    finally:
        experts._is_expert_parallel = saved
        experts.config._experts_implementation = "grouped_mm"


@st.composite
def layer_case(draw):
    n = draw(st.integers(2, 10))
    k = draw(st.integers(1, min(n, 5)))
    t = draw(st.integers(1, 40))
    hidden = 8 * draw(st.integers(1, 4))
    inter = 8 * draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16]))
    pattern = draw(st.sampled_from(["random", "one expert takes all", "few experts", "native"]))
    seed = draw(st.integers(0, 2**16))
    return n, k, t, hidden, inter, dtype, pattern, seed


def _routing(n, k, t, pattern, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, n, generator=g)
    if pattern == "few experts":  # experts outside a small subset receive no token
        allowed = torch.randperm(n, generator=g)[: max(k, n // 3)]
        mask = torch.full((n,), float("-inf"))
        mask[allowed] = 0
        logits = logits + mask
    if pattern == "one expert takes all":
        logits[:, int(torch.randint(n, (1,), generator=g))] += 100.0
    probs = logits.softmax(-1)
    w, idx = torch.topk(probs, k, dim=-1)
    w = (w / w.sum(-1, keepdim=True)).to(dtype)
    if pattern != "native":  # drop slots anywhere in the row, keep at least one
        drop = torch.rand(t, k, generator=g) < 0.5
        drop[torch.arange(t), torch.randint(k, (t,), generator=g)] = False
        idx = torch.where(drop, n, idx)
        w = torch.where(drop, torch.zeros_like(w), w)
    return idx, w


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_case(), st.sampled_from(["expert", "slot"]))
@torch.no_grad()
def test_bit_identical_to_transformers(case, order):
    n, k, t, hidden, inter, dtype, pattern, seed = case
    experts = _experts(hidden, inter, n, k, dtype, seed)
    x = torch.randn(t, hidden, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    idx, w = _routing(n, k, t, pattern, seed, dtype)
    got = variable_k_experts_forward(experts, x, idx, w, order=order)
    ref = reference(experts, x, idx, w, order)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert torch.equal(got, ref), (order, pattern, (got.float() - ref.float()).abs().max())


@settings(max_examples=15, deadline=None)
@given(layer_case())
@torch.no_grad()
def test_strategies_agree_within_tolerance(case):
    """Padded and grouped-by-k change the order of the adds, so they agree within rounding:
    fp32 rtol 1e-5, bf16 rtol 2e-2 (a few bf16 ulps)."""
    n, k, t, hidden, inter, dtype, pattern, seed = case
    experts = _experts(hidden, inter, n, k, dtype, seed)
    x = torch.randn(t, hidden, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    idx, w = _routing(n, k, t, pattern, seed, dtype)
    ref = variable_k_experts_forward(experts, x, idx, w).float()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for fn in (padded_experts_forward, grouped_by_k_experts_forward):
        torch.testing.assert_close(fn(experts, x, idx, w).float(), ref, **tol)


@pytest.mark.parametrize("order", ["expert", "slot"])
def test_autograd_still_works(order):
    experts = _experts(16, 16, 4, 2, torch.float32, 0)
    x = torch.randn(6, 16, requires_grad=True)
    idx = torch.tensor([[0, 1], [2, 4], [3, 3], [1, 4], [0, 2], [4, 1]])
    w = torch.rand(6, 2, requires_grad=True)
    out = variable_k_experts_forward(experts, x, idx, w, order=order)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and experts.gate_up_proj.grad is not None
    assert (w.grad[idx == 4] == 0).all()


def test_dropped_slots_are_never_multiplied(monkeypatch):
    """Only kept rows reach the matmuls: count rows through a spy on torch.mm / grouped_mm."""
    experts = _experts(16, 16, 4, 2, torch.float32, 0)
    x = torch.randn(5, 16)
    idx = torch.tensor([[0, 4], [1, 4], [2, 3], [4, 0], [1, 2]])
    w = torch.rand(5, 2)
    counter = torch.zeros(4, dtype=torch.long)
    for order in ("expert", "slot"):
        counter.zero_()
        with torch.no_grad():
            variable_k_experts_forward(experts, x, idx, w, order=order, count_rows=counter.add_)
        assert counter.tolist() == [2, 2, 2, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_bit_identical_when_every_token_keeps_at_most_two_of_many_slots(dtype):
    """K = 6 slots, at most 2 kept per token, anywhere in the row: the back-end adds into a
    [T, H] accumulator instead of summing a [T*K, H] buffer, and must still match grouped_mm."""
    n, k, t = 8, 6, 40
    experts = _experts(16, 8, n, k, dtype, 0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(t, 16, generator=g).to(dtype)
    idx = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(t)])
    kept = torch.zeros(t, k, dtype=torch.bool)
    for row in range(t):
        kept[row, torch.randperm(k, generator=g)[: 1 + row % 2]] = True
    idx = torch.where(kept, idx, n)
    w = torch.where(kept, torch.rand(t, k, generator=g), 0.0).to(dtype)
    got = variable_k_experts_forward(experts, x, idx, w, order="slot")
    assert torch.equal(got, reference(experts, x, idx, w, "slot"))

"""The variable-K back-end against a plain per-token reference, over layouts, dtypes and k mixes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import tiny_model

from adaptk.experts import variable_k_experts_forward
from adaptk.models import find_moe_layers


def _reference(experts, hidden, index, weights):
    """One token, one slot at a time, in float64: what the layer means."""
    n = experts.num_experts
    out = torch.zeros(hidden.shape, dtype=torch.float64)
    for t in range(hidden.shape[0]):
        for j in range(index.shape[1]):
            e = int(index[t, j])
            if e == n:
                continue
            x = hidden[t].double()
            gu = experts.gate_up_proj[e].double()
            if experts.is_transposed:
                h = x @ gu + (experts.gate_up_proj_bias[e].double() if experts.has_bias else 0)
                h = experts._apply_gate(h.unsqueeze(0))[0]
                y = h @ experts.down_proj[e].double() + (experts.down_proj_bias[e].double() if experts.has_bias else 0)
            else:
                gate, up = (gu @ x).chunk(2)
                y = experts.down_proj[e].double() @ (experts.act_fn(gate) * up)
            out[t] += float(weights[t, j]) * y
    return out


def _experts(family, dtype=torch.float32):
    model = tiny_model(family).to(dtype)
    return find_moe_layers(model)[0].experts


def _routing(t, n, kmax, seed, drop=0.4, only=None):
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(n, generator=g)[:kmax] for _ in range(t)]) if t else torch.zeros(0, kmax, dtype=torch.long)
    if only is not None:
        index[:, 0] = only
        index[:, 1:] = n  # every token on one expert
    weights = torch.rand(t, kmax, generator=g)
    dropped = (torch.rand(t, kmax, generator=g) < drop) & (torch.arange(kmax) > 0)
    index = torch.where(dropped, n, index)
    weights = torch.where(index == n, 0.0, weights)
    return index, weights


@settings(max_examples=25, deadline=None)
@given(
    family=st.sampled_from(["mixtral", "gpt_oss", "olmoe"]),
    t=st.integers(0, 24),
    seed=st.integers(0, 2**16),
    drop=st.sampled_from([0.0, 0.3, 1.0]),
    order=st.sampled_from(["expert", "slot"]),
)
def test_matches_reference_fp32(family, t, seed, drop, order):
    experts = _experts(family)
    n = experts.num_experts
    kmax = min(4, n)
    index, weights = _routing(t, n, kmax, seed, drop)
    hidden = torch.randn(t, experts.gate_up_proj.shape[-1 if not experts.is_transposed else 1], generator=torch.Generator().manual_seed(seed))
    counter = torch.zeros(n, dtype=torch.long)
    with torch.no_grad():
        out = variable_k_experts_forward(experts, hidden, index, weights, order=order, count_rows=counter.add_)
        ref = _reference(experts, hidden, index, weights)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    # rows the matmuls received: exactly the kept slots, per expert
    expected = torch.bincount(index[index < n], minlength=n)
    assert torch.equal(counter, expected)


@pytest.mark.parametrize("order", ["expert", "slot"])
def test_bf16_within_tolerance(order):
    experts = _experts("mixtral", torch.bfloat16)
    index, weights = _routing(32, 8, 2, 0, 0.5)
    hidden = torch.randn(32, 32).to(torch.bfloat16)
    with torch.no_grad():
        out = variable_k_experts_forward(experts, hidden, index, weights, order=order)
        ref = _reference(experts, hidden, index, weights)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("order", ["expert", "slot"])
def test_one_expert_takes_every_token_and_others_none(order):
    experts = _experts("mixtral")
    index, weights = _routing(16, 8, 2, 1, only=5)
    hidden = torch.randn(16, 32)
    counter = torch.zeros(8, dtype=torch.long)
    with torch.no_grad():
        out = variable_k_experts_forward(experts, hidden, index, weights, order=order, count_rows=counter.add_)
    torch.testing.assert_close(out.double(), _reference(experts, hidden, index, weights), rtol=1e-4, atol=1e-5)
    assert counter.tolist() == [0, 0, 0, 0, 0, 16, 0, 0]


def test_dropped_slots_are_never_multiplied():
    """NaN in a dropped slot's weight or in a token whose every slot is dropped cannot leak."""
    experts = _experts("mixtral")
    index = torch.tensor([[3, 8], [8, 8]])
    weights = torch.tensor([[1.0, float("nan")], [float("nan"), float("nan")]])
    hidden = torch.randn(2, 32)
    with torch.no_grad():
        for order in ("expert", "slot"):
            out = variable_k_experts_forward(experts, hidden, index, weights, order=order)
            assert torch.isfinite(out).all()
            assert torch.equal(out[1], torch.zeros(32))


def test_unknown_order():
    with pytest.raises(ValueError, match="order"):
        variable_k_experts_forward(_experts("mixtral"), torch.randn(1, 32), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1), order="fast")


def test_registered_as_transformers_experts_implementation():
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    import adaptk  # noqa: F401
    from adaptk.experts import register_with_transformers

    register_with_transformers()
    assert "adaptk" in ALL_EXPERTS_FUNCTIONS
    model = tiny_model("mixtral", experts_implementation="adaptk")
    ref = tiny_model("mixtral", experts_implementation="grouped_mm")
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, rtol=0, atol=0)


@settings(max_examples=15, deadline=None)
@given(
    family=st.sampled_from(["mixtral", "gpt_oss"]),
    t=st.integers(1, 20),
    seed=st.integers(0, 2**16),
    order=st.sampled_from(["expert", "slot"]),
)
def test_sync_free_path_matches_reference_and_hides_the_unread_tail(family, t, seed, order):
    """The accelerator path (no host sync: sentinel rows stay past the last group offset, which
    the matmuls never read, and are zeroed) run on CPU: same result as the reference, even when
    the dropped slots' weights are NaN."""
    experts = _experts(family)
    n = experts.num_experts
    index, weights = _routing(t, n, 4, seed, 0.5)
    weights = torch.where(index == n, float("nan"), weights)
    hidden = torch.randn(t, experts.gate_up_proj.shape[-1 if not experts.is_transposed else 1],
                         generator=torch.Generator().manual_seed(seed))
    counter = torch.zeros(n, dtype=torch.long)
    with torch.no_grad():
        out = variable_k_experts_forward(experts, hidden, index, weights, order=order, count_rows=counter.add_,
                                         sync_free=True)
        ref = _reference(experts, hidden, index, torch.nan_to_num(weights, nan=0.0))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    assert torch.equal(counter, torch.bincount(index[index < n], minlength=n))

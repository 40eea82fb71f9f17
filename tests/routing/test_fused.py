"""``adaptk.routing.fused``: the one-call routing step gives the torch ops' bits (ties in torch's
order), or declines a NaN."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from step_policies import KINDS, step_policy

from adaptk import FixedTopK
from adaptk.models.families import RenormalisedTopK
from adaptk.models.spec import RouterScores
from adaptk.routing import fused
from adaptk.routing.entropy import entropy_nats
from adaptk.routing.select import decide

pytestmark = pytest.mark.skipif(fused.unavailable() is not None, reason="no C compiler for the fused step")


def _probs(t: int, n: int, levels: int | None, seed: int) -> torch.Tensor:
    """[T, N] softmax rows; ``levels`` quantises the logits so that ties are common."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, n, generator=g) * 2
    if levels is not None:
        logits = (logits * levels / 4).round()
    return torch.softmax(logits, dim=-1)


def _reference(policy, probs, k, renorm):
    """The torch ops: ``decide`` and the families' own weights (float32 out)."""
    sel = decide(policy, probs, probs, layer=0, native_k=k, sorted_topk=True)
    weights = RenormalisedTopK(renorm, "float32")(None, RouterScores(probs, probs, probs), sel, torch.float32)
    return sel, weights


@settings(max_examples=150, deadline=None)
@given(t=st.integers(1, 40), n=st.integers(1, 70), data=st.data(), levels=st.sampled_from([None, 1, 3]),
       seed=st.integers(0, 2**16), nan_row=st.booleans())
def test_fused_step_equals_the_torch_ops_or_declines(t, n, data, levels, seed, nan_row):
    """Quantised logits make ties common: those rows take torch.topk's order, the rest the C
    step's; only a NaN declines the call."""
    k = data.draw(st.integers(1, min(n, 8)), label="k")
    policy = step_policy(data.draw(st.sampled_from(KINDS), label="policy"), k, n)
    renorm = data.draw(st.booleans(), label="renorm") and k <= 2
    probs = _probs(t, n, levels, seed)
    if nan_row:
        probs[t // 2, 0] = float("nan")
    tau = policy.rank_thresholds(0, k, probs.device)
    entropy = entropy_nats(probs)
    out = fused.route_topk(probs, entropy, tau, None, renormalise=renorm)
    assert (out.status == fused.DECLINED) == nan_row
    if out.status == fused.OK:
        ref, w = _reference(policy, probs, k, renorm)
        for name in ("indices", "candidates", "drop", "top_probs"):
            assert torch.equal(getattr(out.selection, name), getattr(ref, name)), name
        assert out.selection.entropy is entropy and out.selection.chosen_k is None
        assert torch.equal(out.weights, w)
        assert torch.equal(out.selection.k, ref.k)


@pytest.mark.parametrize("n, k", [(8, 2), (8, 3), (64, 8), (6, 2)])
def test_ties_take_torchs_order_not_the_lower_index(n, k):
    """Every probability equal: torch.topk's order among ties is its own (not lower index first),
    and the step gives it, with the tied rows among untied ones."""
    probs = torch.cat([_probs(3, n, None, 1), torch.full((1, n), 1 / n), _probs(2, n, None, 2)])  # [6, N], row 3 tied
    policy = FixedTopK(k)
    tau = policy.rank_thresholds(0, k, probs.device)
    out = fused.route_topk(probs, entropy_nats(probs), tau, None, renormalise=False)
    ref, w = _reference(policy, probs, k, False)
    assert out.status == fused.OK and ref.candidates[3].tolist() != list(range(k))
    for name in ("indices", "candidates", "drop", "top_probs"):
        assert torch.equal(getattr(out.selection, name), getattr(ref, name)), name
    assert torch.equal(out.weights, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), float("-inf")])
def test_logits_with_nan_or_inf_are_reported(dtype, bad):
    probs = _probs(5, 8, None, 0)
    logits = torch.randn(5, 8).to(dtype)
    if bad is not None:
        logits[3, 6] = bad
    tau = FixedTopK(2).rank_thresholds(0, 2, probs.device)
    out = fused.route_topk(probs, entropy_nats(probs), tau, logits, renormalise=True)
    assert out.status == (fused.OK if bad is None else fused.NONFINITE)
    assert fused.route_topk(probs, entropy_nats(probs), tau, None, renormalise=True).status == fused.OK


def test_renormalising_more_than_two_is_refused():
    probs = _probs(2, 8, None, 0)
    tau = FixedTopK(3).rank_thresholds(0, 3, probs.device)
    with pytest.raises(ValueError, match="K <= 2"):
        fused.route_topk(probs, entropy_nats(probs), tau, None, renormalise=True)


def test_tensors_it_does_not_take_are_left_to_the_torch_ops():
    probs = _probs(4, 8, None, 0)
    logits = torch.randn(4, 8)
    assert fused.eligible(probs, logits, 2)
    assert not fused.eligible(probs.t().contiguous().t(), logits, 2)  # not contiguous
    assert not fused.eligible(probs.double(), logits, 2)
    assert not fused.eligible(probs[:0], logits[:0], 2)  # no tokens
    assert not fused.eligible(probs, logits, 9)  # K > N
    assert not fused.eligible(probs.requires_grad_(), logits, 2)  # autograd needs the torch ops

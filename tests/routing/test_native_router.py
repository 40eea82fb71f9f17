"""``adaptk.routing.fused.NativeRouter``: the whole softmax top-k router in one C call, checked
against a float64 reference of the same router (not bit for bit: its own summation order)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from step_policies import KINDS, step_policy
from threads import route_in_threads

from adaptk import EntropyThreshold, FixedTopK
from adaptk.routing import fused
from adaptk.routing.stats import LayerStats

pytestmark = pytest.mark.skipif(fused.unavailable() is not None, reason="no C compiler for the native router")


def _inputs(t: int, h: int, n: int, dtype: torch.dtype, seed: int, levels: int | None = None):
    """hidden [T, H] and router weight [N, H]; ``levels`` quantises the weights so that logits tie."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(t, h, generator=g)
    weight = torch.randn(n, h, generator=g) * 3 / math.sqrt(h)  # logits of std ~3: entropies spread out
    if levels is not None:
        hidden, weight = hidden.sign(), (weight * levels).round()
    return hidden.to(dtype), weight.to(dtype)


def _check(out: fused.Routed, hidden, weight, tau, renorm: bool) -> None:
    t, n, k = hidden.shape[0], weight.shape[0], tau.shape[0]
    h64, w64 = hidden.double(), weight.double()
    exact = h64 @ w64.T  # [T, N]
    scale = (h64.abs() @ w64.abs().T).clamp_min(1e-30)  # what a float32 sum's rounding error scales with
    logits = out.logits.double()
    bound = 1e-5 * scale + (2.0**-8 * exact.abs() if hidden.dtype == torch.bfloat16 else 0.0)
    assert out.logits.dtype == hidden.dtype and bool(((logits - exact).abs() <= bound).all())
    # the rest, against a float64 reference of the softmax of the logits it returned
    probs = torch.softmax(logits, dim=-1)  # [T, N]
    entropy = -(probs * probs.clamp_min(1e-300).log()).sum(dim=-1)
    sel = out.selection
    assert torch.allclose(sel.entropy.double(), entropy, atol=1e-5)
    cand = sel.candidates  # [T, K]: distinct, best first, the top K of each row
    assert bool((cand.sort(dim=-1).values.diff(dim=-1) > 0).all()) and bool(((cand >= 0) & (cand < n)).all())
    chosen = probs.gather(1, cand)
    assert bool((chosen.diff(dim=-1) <= 1e-6).all())
    kth = probs.topk(k, dim=-1).values[:, -1:]
    assert bool((chosen[:, -1:] >= kth - 1e-6).all())
    # its own entropy decides: slot r is dropped iff entropy < tau[r]
    assert torch.equal(sel.drop, sel.entropy[:, None] < tau[None, :])
    assert torch.equal(sel.indices, cand.masked_fill(sel.drop, n))
    kept = chosen.masked_fill(sel.drop, 0.0)
    if renorm:
        kept = kept / kept.sum(dim=-1, keepdim=True)
    assert out.weights.dtype == torch.float32 and torch.allclose(out.weights.double(), kept, atol=1e-5)
    assert sel.chosen_k is None and sel.top_probs is None and t == sel.indices.shape[0]


@settings(max_examples=150, deadline=None)
@given(t=st.integers(1, 20), h=st.integers(1, 70), n=st.integers(1, 70), data=st.data(),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), levels=st.sampled_from([None, None, 2]),
       seed=st.integers(0, 2**16))
def test_native_router_matches_a_float64_reference(t, h, n, data, dtype, levels, seed):
    k = data.draw(st.integers(1, min(n, 8)), label="k")
    policy = step_policy(data.draw(st.sampled_from(KINDS), label="policy"), k, n)
    renorm = data.draw(st.booleans(), label="renorm")
    hidden, weight = _inputs(t, h, n, dtype, seed, levels)
    tau = policy.rank_thresholds(0, k, hidden.device)
    out = fused.route_native(hidden, weight, tau, renorm)
    assert out.status == fused.OK
    _check(out, hidden, weight, tau, renorm)
    # as the patch calls it: no selection, its counts added to a layer's statistics in C, the
    # weights in the dtype the model wants; the same routing as the selection folded by LayerStats
    kmax = k + data.draw(st.integers(0, 2), label="kmax - k")
    as_input = data.draw(st.booleans(), label="weights as input")
    stats, ref = (LayerStats(0, "layer", n, k, kmax, "cpu") for _ in range(2))
    ref.update(out.selection.entropy, out.selection.candidates, out.selection.drop)
    lean = fused.route_native(hidden, weight, tau, renorm, weights_as_input=as_input, stats=stats, selection=False)
    assert lean.status == fused.OK and lean.selection is None
    assert torch.equal(lean.logits, out.logits) and torch.equal(lean.indices, out.indices)
    wdtype = hidden.dtype if as_input else torch.float32
    assert lean.weights.dtype == wdtype and torch.equal(lean.weights, out.weights.to(wdtype))
    a, b = stats.report(), ref.report()
    assert (a.tokens, a.k_histogram, a.expert_counts) == (b.tokens, b.k_histogram, b.expert_counts)
    assert math.isclose(a.entropy_mean, b.entropy_mean, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(a.entropy_std, b.entropy_std, rel_tol=1e-6, abs_tol=1e-6)


def test_ties_keep_the_lower_expert_first():
    hidden = torch.ones(3, 16)
    weight = torch.zeros(6, 16)  # every logit 0: six-way ties
    out = fused.route_native(hidden, weight, FixedTopK(4).rank_thresholds(0, 4, hidden.device), True)
    assert out.selection.candidates.tolist() == [[0, 1, 2, 3]] * 3
    assert torch.allclose(out.weights, torch.full((3, 4), 0.25))
    assert torch.allclose(out.selection.entropy, torch.full((3,), math.log(6)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_token_gets_the_same_bits_alone_or_in_a_block(dtype):
    """Each token's arithmetic is its own, whatever T or its place in a block of four."""
    hidden, weight = _inputs(11, 37, 13, dtype, 3)
    tau = EntropyThreshold([1, 4], [0.5 * math.log(13)]).rank_thresholds(0, 4, hidden.device)
    whole = fused.route_native(hidden, weight, tau, True)
    for i in range(11):
        one = fused.route_native(hidden[i : i + 1], weight, tau, True)
        assert torch.equal(one.logits, whole.logits[i : i + 1]) and torch.equal(one.weights, whole.weights[i : i + 1])
        for a, b in zip(one.selection, whole.selection, strict=True):
            assert (a is None and b is None) or torch.equal(a, b[i : i + 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "overflow"])
def test_nan_or_inf_logits_are_reported(dtype, bad):
    hidden, weight = _inputs(5, 32, 8, dtype, 0)
    if bad == "overflow":  # finite inputs whose logit overflows (float32 max ~3.4e38)
        hidden[2], weight[1] = 1e30, 1e30
    else:
        hidden[3, 7] = bad
    tau = FixedTopK(2).rank_thresholds(0, 2, hidden.device)
    stats = LayerStats(0, "layer", 8, 2, 2, "cpu")
    out = fused.route_native(hidden, weight, tau, True, stats=stats)
    assert out.status == fused.NONFINITE and out.logits is None and out.selection is None
    assert not bool(stats.counts.any()) and not bool(stats.entropy_moments.any())  # nothing counted


def test_shapes_it_does_not_take_are_refused():
    hidden, weight = _inputs(2, 8, fused.MAX_N + 1, torch.float32, 0)
    tau = FixedTopK(2).rank_thresholds(0, 2, hidden.device)
    assert not fused.native_eligible(hidden, weight, 2)
    with pytest.raises(ValueError, match="K <= N <= 4096"):
        fused.route_native(hidden, weight, tau, True)


def test_statistics_it_cannot_count_into_are_refused():
    hidden, weight = _inputs(2, 8, 6, torch.float32, 0)
    tau = FixedTopK(3).rank_thresholds(0, 3, hidden.device)
    with pytest.raises(ValueError, match="count k up to 2; this router keeps up to 3"):  # k = 0..2 only
        fused.NativeRouter(tau, True, stats=LayerStats(0, "layer", 6, 2, 2, "cpu"))
    with pytest.raises(ValueError, match="count 5 experts; this router has 6"):
        fused.route_native(hidden, weight, tau, True, stats=LayerStats(0, "layer", 5, 3, 3, "cpu"))
    with pytest.raises(ValueError, match="CPU statistics only"):  # a layer on another device
        fused.NativeRouter(tau, True, stats=LayerStats(0, "layer", 6, 3, 3, "meta"))


def test_tensors_it_does_not_take_are_left_to_the_other_paths():
    hidden, weight = _inputs(4, 16, 8, torch.float32, 0)
    assert fused.native_eligible(hidden, weight, 2)
    assert not fused.native_eligible(hidden.t().contiguous().t(), weight, 2)  # not contiguous
    assert not fused.native_eligible(hidden.half(), weight.half(), 2)
    assert not fused.native_eligible(hidden.bfloat16(), weight, 2)  # dtypes differ
    assert not fused.native_eligible(hidden[:0], weight, 2)  # no tokens
    many = torch.zeros(fused.NATIVE_MAX_TOKENS + 1, 16)
    assert not fused.native_eligible(many, weight, 2)  # torch's GEMM for many tokens
    assert fused.native_eligible(many[:-1], weight, 2)
    assert not fused.native_eligible(hidden[:, :8].contiguous(), weight, 2)  # hidden sizes differ
    assert not fused.native_eligible(hidden, weight, 9)  # K > N
    assert not fused.native_eligible(hidden, weight.clone().requires_grad_(), 2)  # autograd: the torch ops
    with torch.no_grad():
        assert fused.native_eligible(hidden, weight.clone().requires_grad_(), 2)


def test_threads_routing_one_layer_count_every_token():
    """The C call adds to the layer's counters in place, under the statistics' lock, so that
    threads serving one model cannot lose each other's counts (without the lock this loses some)."""
    hidden, weight = _inputs(16, 64, 8, torch.float32, 0)
    stats = LayerStats(0, "layer", 8, 2, 2, "cpu")
    native = fused.NativeRouter(FixedTopK(2).rank_thresholds(0, 2, hidden.device), True, stats=stats,
                                selection=False)
    route_in_threads(native, hidden, weight, stats, calls=5000)

"""route: vLLM's CPU softmax top-k, op for op, with the policy deciding only how many slots."""

import math

import pytest
import torch

from adaptk.engines.vllm.pairs import DROPPED
from adaptk.engines.vllm.route import route
from adaptk.routing import EntropyThreshold, FixedTopK
from adaptk.routing.entropy import entropy_nats


def vllm_softmax_topk(logits, top_k, renormalize):
    """vLLM 0.32's router/cpu_router.py ``_softmax_topk``, restated as the plain reference."""
    vals, idx = torch.topk(logits, k=top_k, dim=-1, sorted=False)
    if renormalize:
        w = torch.softmax(vals, dim=-1)
    else:
        w = (vals - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
    return w.to(torch.float32), idx.to(torch.int32)


def _logits(t=64, n=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(t, n, generator=g) * torch.rand(t, 1, generator=g) * 4).to(dtype)


@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("policy", [None, FixedTopK(2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_k_is_vllms_routing_bit_for_bit(policy, renormalize, dtype):
    logits = _logits(dtype=dtype)
    r = route(policy, logits, layer=0, native_k=2, renormalize=renormalize)
    w, ids = vllm_softmax_topk(logits, 2, renormalize)
    torch.testing.assert_close(r.weights, w, rtol=0, atol=0)
    assert torch.equal(r.ids, ids)
    torch.testing.assert_close(r.selection.entropy, entropy_nats(torch.softmax(logits.float(), -1)))


@pytest.mark.parametrize("renormalize", [True, False])
def test_entropy_policy_drops_low_ranked_slots_of_confident_tokens(renormalize):
    logits = _logits(t=256)
    policy = EntropyThreshold.from_fractions([1, 2], [0.6], 8)
    r = route(policy, logits, layer=0, native_k=2, renormalize=renormalize)
    probs = torch.softmax(logits, -1)
    h = entropy_nats(probs)
    k = (r.ids != DROPPED).sum(-1)
    assert torch.equal(k, torch.where(h < 0.6 * math.log(8), 1, 2))
    assert 0 < int((k == 1).sum()) < 256
    top1 = probs.argmax(-1)
    kept_best = r.ids.long().gather(1, r.weights.argmax(-1, keepdim=True)).squeeze(1)
    assert torch.equal(kept_best, top1)  # the kept expert of a k=1 token is its best one
    assert bool((r.weights[r.ids == DROPPED] == 0).all())
    if renormalize:
        torch.testing.assert_close(r.weights.sum(-1), torch.ones(256))
    else:  # the kept experts' share of the full softmax
        kept = r.ids != DROPPED
        torch.testing.assert_close(r.weights[kept], probs.gather(1, r.ids.long().clamp_min(0))[kept])


@pytest.mark.vllm
def test_reference_is_vllms_own_function():
    cpu_router = pytest.importorskip("vllm.model_executor.layers.fused_moe.router.cpu_router")
    logits = _logits()
    for renormalize in (True, False):
        ours = vllm_softmax_topk(logits, 2, renormalize)
        theirs = cpu_router._softmax_topk(logits, 2, renormalize)
        torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=0)
        assert torch.equal(ours[1], theirs[1])

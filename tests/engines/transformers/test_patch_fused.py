"""patch(routing="fused"), the default: the routing step of softmax top-k families runs as one
C call on the CPU and the model computes exactly what it computes with the torch ops."""

import math

import pytest
import torch
from tiny_models import tiny_model

import adaptk
from adaptk.models import find_moe_layers
from adaptk.routing import binding, fused

pytestmark = pytest.mark.skipif(fused.unavailable() is not None, reason="no C compiler for the fused step")
FUSED_FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "jamba"]  # softmax top-k conventions


def _count_fused(monkeypatch, cxx: bool):
    """Count the fused router's calls that routed: through the C++ binding (``fused.fused_router``'s
    callables, not None), or, with ``cxx`` False, that binding made unavailable and the ctypes
    step (``fused.route_topk``, status OK) after the model's own scores."""
    calls = {"ok": 0}
    if not cxx:
        real_step = fused.route_topk

        def step(*args, **kwargs):
            out = real_step(*args, **kwargs)
            calls["ok"] += out.status == fused.OK
            return out

        monkeypatch.setattr(fused, "fused_router", lambda *args, **kwargs: None)
        monkeypatch.setattr(fused, "route_topk", step)
        return calls
    real = fused.fused_router

    def make(*args, **kwargs):
        route = real(*args, **kwargs)
        assert route is not None  # the binding builds here
        return _counting(route, calls)

    monkeypatch.setattr(fused, "fused_router", make)
    return calls


def _counting(route, calls: dict):
    """``route``, adding its calls that routed (returned not None) to ``calls["ok"]``."""

    def spy(*args):
        out = route(*args)
        calls["ok"] += out is not None
        return out

    return spy


def _count_native(monkeypatch):
    """Count the calls that the native routers (``NativeRouter.route``, C++ binding or ctypes)
    routed (not None)."""
    calls = {"ok": 0}
    real = fused.NativeRouter.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.route = _counting(self.route, calls)

    monkeypatch.setattr(fused.NativeRouter, "__init__", init)
    return calls


def _run(model, policy, ids, routing, check_finite="auto"):
    with torch.no_grad(), adaptk.patch(model, policy, routing=routing, check_finite=check_finite) as h:
        logits = model(ids).logits
        steps = [model(ids[:, :1]).logits for _ in range(3)]  # one-token calls, as decode steps
        return logits, steps, h.stats()


@pytest.mark.parametrize("cxx", [pytest.param(True, marks=pytest.mark.skipif(
    binding.unavailable() is not None, reason="no C++ binding")), False], ids=["c++", "ctypes"])
@pytest.mark.parametrize("check", ["eager", "deferred"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", FUSED_FAMILIES)
def test_fused_routing_gives_the_torch_ops_bits(family, dtype, check, cxx, monkeypatch):
    model = tiny_model(family).to(dtype)
    layer = find_moe_layers(model)[0]
    k, n = layer.native_k, layer.num_experts
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    calls = _count_fused(monkeypatch, cxx)
    for policy in (adaptk.FixedTopK(k), adaptk.EntropyThreshold([1, k], [0.8 * math.log(n)])):
        calls["ok"] = 0
        ref, ref_steps, ref_stats = _run(model, policy, ids, routing="torch", check_finite=check)
        assert calls["ok"] == 0
        out, steps, stats = _run(model, policy, ids, routing="fused", check_finite=check)
        assert calls["ok"] == 4 * len(find_moe_layers(model))  # the fused router routed every call
        assert torch.equal(out, ref) and all(torch.equal(a, b) for a, b in zip(steps, ref_steps, strict=True))
        for a, b in zip(stats.layers, ref_stats.layers, strict=True):  # C++: entropies summed token by token
            a, b = a.to_dict(), b.to_dict()
            for key in ("entropy_mean", "entropy_std"):
                assert math.isclose(a.pop(key), b.pop(key), rel_tol=1e-12, abs_tol=1e-12)
            assert a == b


def test_fused_routing_still_rejects_nonfinite_logits():
    model = tiny_model("mixtral")
    with torch.no_grad():
        find_moe_layers(model)[0].router.weight[0, 0] = float("inf")
    with adaptk.patch(model, adaptk.FixedTopK(2)), pytest.raises(adaptk.RoutingInputError, match="NaN or Inf"):
        model(torch.ones(1, 4, dtype=torch.long))


def test_training_keeps_the_router_gradient():
    model = tiny_model("mixtral")
    router = find_moe_layers(model)[0].router
    with adaptk.patch(model, adaptk.EntropyThreshold([1, 2], [1.0])):
        model(torch.ones(1, 4, dtype=torch.long)).logits.sum().backward()
    assert router.weight.grad is not None and bool(router.weight.grad.abs().sum() > 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", FUSED_FAMILIES)
def test_native_router_computes_the_model_within_rounding(family, dtype, monkeypatch):
    """routing="native": the whole router in C. Not the torch ops' bits, so: the unpatched model's
    logits within rounding at native k, and the same routing as the fused step (the tiny models'
    entropies are nowhere near a threshold to within rounding)."""
    model = tiny_model(family).to(dtype)
    layer = find_moe_layers(model)[0]
    k, n = layer.native_k, layer.num_experts
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(1))  # <= NATIVE_MAX_TOKENS
    calls = _count_native(monkeypatch)
    with torch.no_grad():
        plain = model(ids).logits.float()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for policy in (adaptk.FixedTopK(k), adaptk.EntropyThreshold([1, k], [0.8 * math.log(n)])):
        calls["ok"] = 0
        ref, ref_steps, ref_stats = _run(model, policy, ids, routing="fused")
        out, steps, stats = _run(model, policy, ids, routing="native")
        assert calls["ok"] == 4 * len(find_moe_layers(model))  # the native router ran every call
        assert torch.allclose(out.float(), ref.float(), atol=tol)
        assert all(torch.allclose(a.float(), b.float(), atol=tol) for a, b in zip(steps, ref_steps, strict=True))
        for a, b in zip(stats.layers, ref_stats.layers, strict=True):
            assert a.k_histogram == b.k_histogram and a.expert_counts == b.expert_counts and a.tokens == b.tokens
            assert math.isclose(a.entropy_mean, b.entropy_mean, rel_tol=1e-5)
            assert math.isclose(a.entropy_std, b.entropy_std, rel_tol=1e-3, abs_tol=1e-5)
        if isinstance(policy, adaptk.FixedTopK):
            assert torch.allclose(out.float(), plain, atol=tol)


def test_native_router_still_rejects_nonfinite_logits():
    model = tiny_model("mixtral")
    with torch.no_grad():
        find_moe_layers(model)[0].router.weight[0, 0] = float("inf")
    with (adaptk.patch(model, adaptk.FixedTopK(2), routing="native"), torch.no_grad(),
          pytest.raises(adaptk.RoutingInputError, match="NaN or Inf")):
        model(torch.ones(1, 4, dtype=torch.long))


def test_native_router_leaves_training_to_the_torch_ops(monkeypatch):
    model = tiny_model("mixtral")
    router = find_moe_layers(model)[0].router
    calls = _count_native(monkeypatch)
    with adaptk.patch(model, adaptk.EntropyThreshold([1, 2], [1.0]), routing="native"):
        model(torch.ones(1, 4, dtype=torch.long)).logits.sum().backward()
    assert calls["ok"] == 0
    assert router.weight.grad is not None and bool(router.weight.grad.abs().sum() > 0)


def test_unknown_routing_is_refused():
    with pytest.raises(ValueError, match="routing must be one of"):
        adaptk.patch(tiny_model("mixtral"), adaptk.FixedTopK(2), routing="fast")

"""``adaptk.routing.binding``: the native router's C++ binding against its ctypes binding (the
same C code: the same bits, the same calls declined, the same counts), and the fused router's
against the torch ops (the same bits, or declined where the C step declines)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from step_policies import step_policy
from threads import route_in_threads

from adaptk import EntropyThreshold, FixedTopK
from adaptk.models.families import RenormalisedTopK
from adaptk.models.spec import RouterScores
from adaptk.native import build as native
from adaptk.routing import binding, fused
from adaptk.routing.select import decide
from adaptk.routing.stats import LayerStats

pytestmark = pytest.mark.skipif(binding.unavailable() is not None,
                                reason=f"no C++ binding of the native router: {binding.unavailable()}")


def _routers(tau: torch.Tensor, renorm: bool, n: int, kmax: int, **options):
    """The same router twice, C++ binding and ctypes, each counting into its own statistics."""
    stats = [LayerStats(0, "layer", n, tau.shape[0], kmax, "cpu") for _ in range(2)]
    cxx, plain = (fused.NativeRouter(tau, renorm, stats=s, selection=False, cxx=c, **options)
                  for s, c in zip(stats, (True, False), strict=True))
    assert not isinstance(cxx.route, type(plain.route))  # the binding really is in use
    return cxx, plain, stats


def _same(a, b) -> None:
    assert (a is None) == (b is None)
    if a is not None:
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)


def _same_counts(a: LayerStats, b: LayerStats) -> None:
    assert a.tokens == b.tokens and torch.equal(a.counts, b.counts)
    assert torch.equal(a.entropy_moments, b.entropy_moments)


@settings(max_examples=100, deadline=None)
@given(t=st.integers(1, 20), h=st.integers(1, 48), n=st.integers(1, 40), data=st.data(),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**16))
def test_the_binding_gives_the_ctypes_bits_and_counts(t, h, n, data, dtype, seed):
    k = data.draw(st.integers(1, min(n, 6)), label="k")
    policy = step_policy("two", k, n)
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(t, h, generator=g).to(dtype)
    weight = (torch.randn(n, h, generator=g) * 3 / math.sqrt(h)).to(dtype)
    batch = data.draw(st.sampled_from([None, 1, t]), label="3-D as [B, T/B, H]")
    if batch is not None:
        hidden = hidden.reshape(batch, t // batch, h)
    tau = policy.rank_thresholds(0, k, hidden.device)
    flatten = data.draw(st.booleans(), label="flatten")
    cxx, plain, stats = _routers(tau, data.draw(st.booleans(), label="renorm"), n, k + data.draw(st.integers(0, 2)),
                                 weights_as_input=data.draw(st.booleans(), label="weights as input"), flatten=flatten)
    for _ in range(2):  # the second call adds to the counts of the first
        out, ref = cxx.route(hidden, weight), plain.route(hidden, weight)
        assert (out is None) == (t > fused.NATIVE_MAX_TOKENS or (batch is not None and not flatten))
        _same(out, ref)
    _same_counts(*stats)


def _counted_nothing(stats: LayerStats) -> bool:
    return stats.tokens == 0 and not bool(stats.counts.any()) and not bool(stats.entropy_moments.any())


def _declined_by_both(hidden: torch.Tensor, weight: torch.Tensor) -> dict:
    """Calls both C++ routers decline, for hidden [4, 16] and weight [8, 16]."""
    return {
        "no tokens": (hidden[:0], weight),
        "hidden sizes differ": (hidden[:, :8].contiguous(), weight),
        "K > N": (hidden, weight[:1]),
        "autograd": (hidden, weight.clone().requires_grad_()),
        "NaN": (hidden.clone().index_fill_(1, torch.tensor([3]), float("nan")), weight),
        "overflow": (torch.full((2, 16), 1e30), torch.full((8, 16), 1e30)),
        "3-D, not flattened": (hidden[None], weight),  # routed with flatten=False
    }


def _declined_cases():
    hidden, weight = torch.randn(4, 16), torch.randn(8, 16)
    return _declined_by_both(hidden, weight) | {
        "too many tokens": (torch.randn(fused.NATIVE_MAX_TOKENS + 1, 16), weight),
        "not contiguous": (hidden.t().contiguous().t(), weight),
        "weight not contiguous": (hidden, weight.t().contiguous().t()),
        "float16": (hidden.half(), weight.half()),
        "dtypes differ": (hidden.bfloat16(), weight),
        "3-D, hidden sizes differ": (torch.randn(1, 2, 8), weight),
    }


@pytest.mark.parametrize("case", sorted(_declined_cases()))
def test_calls_it_declines_are_the_ctypes_ones_and_count_nothing(case):
    hidden, weight = _declined_cases()[case]
    tau = FixedTopK(2).rank_thresholds(0, 2, hidden.device)
    cxx, plain, stats = _routers(tau, True, weight.shape[0], 2, flatten=case != "3-D, not flattened")
    assert cxx.route(hidden, weight) is None and plain.route(hidden, weight) is None
    assert _counted_nothing(stats[0])
    with torch.no_grad():  # no autograd: then it routes
        if case == "autograd":
            _same(cxx.route(hidden, weight), plain.route(hidden, weight))
            _same_counts(*stats)


def test_statistics_of_another_layer_are_refused():
    tau = FixedTopK(2).rank_thresholds(0, 2, torch.device("cpu"))
    cxx, plain, _ = _routers(tau, True, 5, 2)
    hidden, weight = torch.randn(2, 8), torch.randn(6, 8)
    for router in (cxx, plain):
        with pytest.raises(ValueError, match="count 5 experts; this router has 6"):
            router.route(hidden, weight)
    with pytest.raises(ValueError, match="float32"):
        binding.extension().Router(tau.double(), True, False, fused.NATIVE_MAX_TOKENS, True, None)


def test_without_statistics_it_routes_the_same():
    tau = EntropyThreshold([1, 2], [1.0]).rank_thresholds(0, 2, torch.device("cpu"))
    hidden, weight = torch.randn(3, 32), torch.randn(8, 32)
    _same(fused.NativeRouter(tau, True, selection=False).route(hidden, weight),
          fused.NativeRouter(tau, True, selection=False, cxx=False).route(hidden, weight))


@pytest.mark.parametrize("kind", ["native", "fused"])
def test_threads_routing_one_layer_count_every_token(kind):
    """The bindings take the statistics' lock around the C code that counts, as ``NativeRouter`` does."""
    hidden, weight = torch.randn(16, 64), torch.randn(8, 64)
    tau = FixedTopK(2).rank_thresholds(0, 2, hidden.device)
    if kind == "native":
        router, _, (stats, _) = _routers(tau, True, 8, 2)
        route = router.route
    else:
        route, stats = _fused(tau, n=8)
    route_in_threads(route, hidden, weight, stats, calls=5000 if kind == "native" else 2000)


def test_a_missing_cxx_compiler_is_a_build_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-adaptk")
    with pytest.raises(native.NativeBuildError, match="needs a C\\+\\+ compiler.*ctypes"):
        binding.build()


def test_the_build_is_cached_per_torch_version(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path))
    first = binding.build()
    assert binding.build() == first and first.name.startswith(binding.MODULE)
    monkeypatch.setattr(torch, "__version__", "0.0.0-another")
    monkeypatch.setattr(native, "compile_cached", lambda name, key, steps, instead, suffix: key)
    assert "0.0.0-another" in binding.build()  # another torch: another key


def test_where_it_does_not_build_the_router_uses_ctypes(monkeypatch):
    monkeypatch.setattr(binding, "unavailable", lambda: "no C++ compiler")
    tau = FixedTopK(1).rank_thresholds(0, 1, torch.device("cpu"))
    router = fused.NativeRouter(tau, True, selection=False)
    assert router.route == router.route_ctypes


# ---- the fused router (the default): the torch ops' bits ------------------------------------


def _torch_ops(hidden, weight, policy, k: int, renorm: bool, out: str, flatten: bool):
    """What the patch's torch path gives for a linear softmax family: (logits, weights, indices)
    and the ``Selection``."""
    x = hidden.reshape(-1, weight.shape[1]) if flatten else hidden
    logits = F.linear(x, weight)  # [T, N]
    probs = F.softmax(logits, dim=-1, dtype=torch.float)
    sel = decide(policy, probs, probs, layer=0, native_k=k, sorted_topk=True)
    weights = RenormalisedTopK(renorm, out)(None, RouterScores(logits, probs, probs), sel, hidden.dtype)
    return (logits, weights, sel.indices), sel


def _fused(tau, renorm=True, out="float32", flatten=True, n=8, kmax=None):
    """A C++ fused router counting into its own statistics (N experts, k up to kmax)."""
    stats = LayerStats(0, "layer", n, tau.shape[0], kmax or tau.shape[0], "cpu")
    return binding.extension().Fused(tau, renorm, fused.OUT_CODES[out], flatten, stats), stats


@settings(max_examples=150, deadline=None)
@given(t=st.integers(1, 40), h=st.integers(1, 48), n=st.integers(1, 40), data=st.data(),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), seed=st.integers(0, 2**16))
def test_the_fused_binding_gives_the_torch_ops_bits_and_counts(t, h, n, data, dtype, seed):
    k = data.draw(st.integers(1, min(n, 6)), label="k")
    policy = step_policy("two", k, n)
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(t, h, generator=g).to(dtype)
    weight = torch.randn(n, h, generator=g) * 3 / math.sqrt(h)
    tied = n > 1 and data.draw(st.booleans(), label="two experts tied")  # bfloat16 and float16 tie often too
    if tied:
        weight[n - 1] = weight[0]
    weight = weight.to(dtype)
    flatten, renorm = data.draw(st.booleans(), label="flatten"), data.draw(st.booleans(), label="renorm")
    out = data.draw(st.sampled_from(sorted(fused.OUT_CODES)), label="out")
    if flatten and data.draw(st.booleans(), label="3-D"):
        hidden = hidden.reshape(1, t, h)
    tau = policy.rank_thresholds(0, k, hidden.device)
    route, stats = _fused(tau, renorm, out, flatten, n, k + data.draw(st.integers(0, 2), label="kmax - k"))
    ref_stats = LayerStats(0, "layer", n, k, stats.kmax, "cpu")
    for _ in range(2):  # the second call adds to the counts of the first
        got = route(hidden, weight)
        ref, sel = _torch_ops(hidden, weight, policy, k, renorm, out, flatten)
        assert got is not None  # ties too: those rows take at::topk's order
        _same(got, ref)
        ref_stats.update(sel.entropy, sel.candidates, sel.drop)
    report, ref_report = stats.report(), ref_stats.report()
    assert report.tokens == ref_report.tokens == 2 * t and torch.equal(stats.counts, ref_stats.counts)
    assert torch.allclose(stats.entropy_moments, ref_stats.entropy_moments, rtol=1e-12, atol=0)  # order of sums


@pytest.mark.parametrize("tokens", [6, 100])  # the tied rows' list on the stack, or a tensor past 64 tokens
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_that_tie_take_torchs_order_and_are_counted(dtype, tokens):
    """Every expert has a twin (each row's best ties), all experts equal in one row: those rows
    take at::topk's order (not the lower index first)."""
    hidden = torch.randn(tokens, 16, generator=torch.Generator().manual_seed(3)).to(dtype)
    hidden[2] = 0  # every logit 0: an eight-way tie
    weight = torch.randn(4, 16).repeat(2, 1).to(dtype)  # experts i and i + 4 are twins
    policy = FixedTopK(2)
    tau = policy.rank_thresholds(0, 2, hidden.device)
    route, stats = _fused(tau)
    got = route(hidden, weight)
    ref, sel = _torch_ops(hidden, weight, policy, 2, True, "float32", True)
    assert got is not None and sel.candidates[2].tolist() != [0, 1]
    _same(got, ref)
    ref_stats = LayerStats(0, "layer", 8, 2, 2, "cpu")
    ref_stats.update(sel.entropy, sel.candidates, sel.drop)
    assert stats.report().tokens == ref_stats.report().tokens == tokens  # folded: the counters are final
    assert torch.equal(stats.counts, ref_stats.counts)


def _fused_declined_cases():
    hidden, weight = torch.randn(4, 16), torch.randn(8, 16)
    return _declined_by_both(hidden, weight) | {
        "float64": (hidden.double(), weight.double()),
    }


@pytest.mark.parametrize("case", sorted(_fused_declined_cases()))
def test_calls_the_fused_binding_declines_count_nothing(case):
    hidden, weight = _fused_declined_cases()[case]
    tau = FixedTopK(2).rank_thresholds(0, 2, hidden.device)
    route, stats = _fused(tau, flatten=case != "3-D, not flattened", n=weight.shape[0])
    assert route(hidden, weight) is None and _counted_nothing(stats)
    if case == "autograd":  # without autograd it routes
        with torch.no_grad():
            assert route(hidden, weight) is not None and stats.report().tokens == hidden.shape[0]


def test_the_fused_binding_refuses_bad_settings():
    tau = FixedTopK(2).rank_thresholds(0, 2, torch.device("cpu"))
    with pytest.raises(ValueError, match="float32"):
        _fused(tau.double())
    with pytest.raises(ValueError, match="out must be"):
        binding.extension().Fused(tau, True, 3, True, None)
    with pytest.raises(ValueError, match="count k up to 1; this router keeps up to 2"):
        binding.extension().Fused(tau, True, 0, True, LayerStats(0, "layer", 8, 1, 1, "cpu"))
    route, _ = _fused(tau, n=5)
    with pytest.raises(ValueError, match="count 5 experts; this router has 8"):
        route(torch.randn(3, 16), torch.randn(8, 16))
    route = binding.extension().Fused(tau, True, 0, True, None)  # no statistics: routes all the same
    assert route(torch.randn(3, 16), torch.randn(8, 16)) is not None


def test_where_it_does_not_build_the_fused_router_is_none(monkeypatch):
    monkeypatch.setattr(binding, "unavailable", lambda: "no C++ compiler")
    tau = FixedTopK(1).rank_thresholds(0, 1, torch.device("cpu"))
    assert fused.fused_router(tau, True, "float32", flatten=True, stats=None) is None

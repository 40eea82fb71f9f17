"""The statistics' counter layout, declared once in ``csrc/counters.h``: Python reads each counter
where the compiled C code writes it."""

import ctypes
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from adaptk.experts import gemm
from adaptk.native import build as native
from adaptk.native import extension
from adaptk.routing import binding, counters, fused
from adaptk.routing.counters import CounterLayoutError
from adaptk.routing.stats import LayerStats

N, K, KMAX = 5, 3, 5  # kmax > K: the k histogram has room past K, so the experts' offset is not K + 1


def test_python_reads_the_layout_from_the_header_the_c_sources_include():
    header = native.source("adaptk.routing", "counters.h").decode()
    assert '#include "counters.h"' in native.source("adaptk.routing", "route_rows.h").decode()
    for name in fused.SOURCES:  # both routers count through route_rows.h's count_row
        assert '#include "route_rows.h"' in native.source("adaptk.routing", name).decode()
    assert '#include "counters.h"' in native.source("adaptk.routing", "router_ext.cpp").decode()
    lay = counters.layout(KMAX, N)
    assert lay == counters.layout(KMAX, N, counters.parse(header))
    assert (lay.khist, lay.experts, lay.dropped, lay.size) == (0, KMAX + 1, KMAX + 1 + N, KMAX + N + 2)
    s = LayerStats(0, "l", N, 2, KMAX, "cpu")
    assert s.counts.numel() == lay.size and s.entropy_moments.numel() == lay.moments_size


def test_another_header_moves_the_python_side_with_it():
    """The layout is the header's: a header that puts the experts first (a layout the fold can
    count into) is read as such."""
    text = """
#define ADAPTK_KHIST_AT(kmax, n, k) ((n) + 1 + (k))
#define ADAPTK_EXPERT_AT(kmax, n, e) (e)
#define ADAPTK_DROPPED_AT(kmax, n) (n)
#define ADAPTK_COUNTS_SIZE(kmax, n) ((kmax) + (n) + 2)
#define ADAPTK_MOMENT_SUM 1
#define ADAPTK_MOMENT_SUMSQ 0
#define ADAPTK_MOMENTS_SIZE 2
"""
    lay = counters.layout(KMAX, N, counters.parse(text))
    assert (lay.khist, lay.experts, lay.dropped, lay.moment_sum, lay.moment_sumsq) == (N + 1, 0, N, 1, 0)


@pytest.mark.parametrize("change, message", [
    (("ADAPTK_EXPERT_AT(kmax, n, e) ((kmax) + 1 + (e))", "ADAPTK_EXPERT_AT(kmax, n, e) ((kmax) + 1 + 2 * (e))"),
     "not contiguous"),
    (("ADAPTK_EXPERT_AT(kmax, n, e) ((kmax) + 1 + (e))", "ADAPTK_EXPERT_AT(kmax, n, e) ((kmax) + (e))"), "overlaps"),
    (("ADAPTK_COUNTS_SIZE(kmax, n) ((kmax) + 1 + (n) + 1)", "ADAPTK_COUNTS_SIZE(kmax, n) ((kmax) + (n))"),
     "outside"),
    (("ADAPTK_MOMENT_SUMSQ 1", "ADAPTK_MOMENT_SUMSQ 0"), "moments"),
    (("#define ADAPTK_MOMENTS_SIZE 2", ""), "does not define ADAPTK_MOMENTS_SIZE"),
    (("ADAPTK_KHIST_AT(kmax, n, k) (k)", "ADAPTK_KHIST_AT(kmax, n, k) (k / 2)"), "only integers"),
    (("ADAPTK_KHIST_AT(kmax, n, k) (k)", "ADAPTK_KHIST_AT(kmax, n, k) (j)"), "only integers"),
    (("ADAPTK_KHIST_AT(kmax, n, k) (k)", "ADAPTK_KHIST_AT(kmax, n, k) (k +)"), "not an integer expression"),
])
def test_a_header_the_counters_cannot_have_is_refused(change, message):
    text = native.source("adaptk.routing", "counters.h").decode()
    assert change[0] in text
    with pytest.raises(CounterLayoutError, match=message):
        counters.layout(KMAX, N, counters.parse(text.replace(change[0], change[1])))


def _tokens():
    """entropy [T] float32, cand [T, K] int64, drop [T, K] bool: kept k of 0..K, every expert."""
    g = torch.Generator().manual_seed(0)
    t = 40
    cand = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(t)])
    drop = torch.rand(t, K, generator=g) < 0.45
    drop[:4] = torch.tensor([[True] * K, [False] * K, [False, True, True], [True, False, True]])
    return torch.rand(t, generator=g) * 2, cand, drop


@pytest.mark.skipif(fused.unavailable() is not None, reason="no C compiler for the fused step")
def test_each_counter_the_c_code_writes_lands_where_python_reads_it():
    entropy, cand, drop = _tokens()
    stats = LayerStats(0, "l", N, 2, KMAX, "cpu")
    lib = ctypes.CDLL(str(fused.build()))  # its own handle: the argtypes set here stay here
    count = lib.adaptk_count
    count.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_void_p, ctypes.c_int64,
                                                                        ctypes.c_void_p]
    count.restype = None
    drop_u8 = drop.to(torch.uint8)
    with stats.lock:
        count(entropy.data_ptr(), cand.data_ptr(), drop_u8.data_ptr(), entropy.shape[0], N, K,
              stats.counts.data_ptr(), KMAX, stats.entropy_moments.data_ptr())
    # a plain reference, token by token
    k_hist, experts, dropped = [0] * (KMAX + 1), [0] * N, 0
    for c_row, d_row in zip(cand.tolist(), drop.tolist()):
        k_hist[d_row.count(False)] += 1
        for c, d in zip(c_row, d_row):
            dropped += d
            experts[c] += not d
    e = entropy.double()
    lay = stats.layout
    assert stats.k_hist.tolist() == k_hist and stats.expert_counts.tolist() == experts
    assert int(stats.counts[lay.dropped]) == dropped and int(stats.counts.sum()) == entropy.shape[0] * (K + 1)
    assert float(stats.entropy_moments[lay.moment_sum]) == pytest.approx(float(e.sum()), rel=1e-12)
    assert float(stats.entropy_moments[lay.moment_sumsq]) == pytest.approx(float(e.dot(e)), rel=1e-12)
    # and the torch path's fold of the same tokens counts the same
    ref = LayerStats(0, "l", N, 2, KMAX, "cpu")
    ref.update(entropy, cand, drop)
    a, b = stats.compute(), ref.compute()
    assert (a.tokens, a.k_histogram, a.expert_counts) == (b.tokens, b.k_histogram, b.expert_counts)
    assert a.entropy_mean == pytest.approx(b.entropy_mean, rel=1e-12)


def _fake_stats(size, moments=2):
    return SimpleNamespace(counts=torch.zeros(size, dtype=torch.long), num_experts=N, kmax=K,
                           entropy_moments=torch.zeros(moments, dtype=torch.float64), lock=threading.Lock())


@pytest.mark.skipif(binding.unavailable() is not None, reason="no C++ binding of the routers")
def test_the_cxx_routers_refuse_counters_of_another_size():
    """Before counters.h the C++ code took any counts tensor and the C code wrote past its end."""
    tau = torch.zeros(K)
    size = counters.layout(K, N).size
    ext = binding.extension()
    ext.Fused(tau, True, 0, True, _fake_stats(size))  # the layout's size: taken
    for stats in (_fake_stats(size - 1), _fake_stats(size, moments=1)):
        with pytest.raises(ValueError, match="counters.h lays out"):
            ext.Fused(tau, True, 0, True, stats)
        with pytest.raises(ValueError, match="counters.h lays out"):
            ext.Router(tau, True, False, 16, True, stats)


@pytest.mark.skipif(fused.unavailable() is not None, reason="no C compiler for the fused step")
def test_the_ctypes_router_refuses_counters_of_another_size():
    with pytest.raises(ValueError, match="counters.h"):
        fused.NativeRouter(torch.zeros(K), True, stats=_fake_stats(counters.layout(K, N).size + 1), cxx=False)


def test_the_compiled_code_is_cached_per_header(monkeypatch):
    """A changed counters.h compiles anew (its bytes are in both cache keys, though the sources
    include it through route_rows.h), and is written beside the sources it compiles with."""
    keys, written = [], []

    def compile_cached(name, key, steps, instead, suffix=".so"):
        keys.append((name, list(key)))
        with tempfile.TemporaryDirectory() as tmp:
            steps(Path(tmp), Path(tmp) / "out")
            written.append(sorted(p.name for p in Path(tmp).iterdir()))
        return Path("/nonexistent")

    monkeypatch.setattr(native, "compile_cached", compile_cached)
    monkeypatch.setattr(native, "compiler", lambda *a, **k: "/bin/true")
    monkeypatch.setattr(extension, "torch_flags", lambda: ([], []))
    original = native.source
    for header in (None, b"#define ADAPTK_MOMENT_SUM 0 /* changed */\n"):
        if header is not None:
            monkeypatch.setattr(native, "source", lambda package, name, h=header:
                                h if name == "counters.h" else original(package, name))
        fused.build()
        binding.build()
    (c1, k1), (x1, kx1), (c2, k2), (x2, kx2) = keys
    assert (c1, x1) == (c2, x2) == ("routers", binding.MODULE)
    assert k1 != k2 and kx1 != kx2
    for files in written[:2]:
        assert {"counters.h", "route_rows.h", *fused.SOURCES} <= set(files)
    gemm.build()  # includes no header: none written, none in its key
    assert "counters.h" not in written[-1] and b"counters.h" not in b"".join(
        k if isinstance(k, bytes) else k.encode() for k in keys[-1][1])

"""The native small-row GEMM against torch's matmul, over shapes that cross every row block and
column panel boundary, weight layouts and strides; and its build errors."""

import platform

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptk.errors import KernelError
from adaptk.experts import gemm
from adaptk.experts.gemm import PackedExperts, PackedWeight
from adaptk.native import build
from adaptk.native.build import NativeBuildError

pytestmark = pytest.mark.skipif(gemm.unavailable() is not None, reason=f"no native kernel: {gemm.unavailable()}")


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(0, 40),
    n=st.integers(1, 100),
    k=st.integers(1, 70),
    transposed=st.booleans(),
    strided_rows=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_matmul_matches_torch(m, n, k, transposed, strided_rows, dtype, seed):
    """float32 or bfloat16 weights (used exactly, so the reference is the bfloat16 values in
    float64), float32 sums; rows float32, or bfloat16 where the CPU has bfloat16 dot products."""
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(k, n, generator=g).t() if transposed else torch.randn(n, k, generator=g)).to(dtype)  # [n, k]
    x = torch.randn(m, 2 * k if strided_rows else k, generator=g)[:, :k]  # rows with a stride > k
    packed = PackedWeight(w)
    got = packed.matmul(x)
    assert got.shape == (m, n) and got.dtype == torch.float32
    if packed.pairs:  # bfloat16 dot products: the rows are rounded to bfloat16, as torch's bf16 mm does
        x = x.to(torch.bfloat16)
    ref = (x.double() @ w.double().t()).float()
    # sequential float32 sums over k: within k float32 ulps of the float64 result
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * k)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=6),
    skip=st.integers(0, 2),
    n=st.integers(1, 70),
    k=st.integers(1, 40),
    with_bias=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_grouped_matmul_matches_each_expert_alone(counts, skip, n, k, with_bias, dtype, seed):
    """Runs of experts (some with no rows, the run starting ``skip`` experts in) in one call:
    each group's rows times its own expert's weights, plus its bias, against float64."""
    g = torch.Generator().manual_seed(seed)
    e = skip + len(counts)
    w = torch.randn(e, n, k, generator=g).to(dtype)
    bias = torch.randn(e, n, generator=g) if with_bias else None
    x = torch.randn(sum(counts), k, generator=g)
    offset = 5  # starts need not begin at 0: they are read relative to the first
    starts = torch.tensor([offset, *(offset + sum(counts[:i + 1]) for i in range(len(counts)))])
    packed = PackedExperts(list(w))
    got = packed.grouped_matmul(x, skip, starts, bias)
    x = x.to(torch.bfloat16) if packed.pairs else x
    ref = torch.cat([x[s - offset:t - offset].double() @ w[skip + i].double().t()
                     + (bias[skip + i].double() if with_bias else 0)
                     for i, (s, t) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist()))])
    assert got.shape == (sum(counts), n)
    torch.testing.assert_close(got, ref.float(), rtol=1e-5, atol=1e-5 * (k + 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_matmul_gives_the_same_bits_on_any_thread_count(dtype):
    """Threads take ranges of column panels (5 panels: uneven splits, and more threads than
    panels); every output stays one thread's sequential sum, so the bits do not move."""
    width = gemm.library().adaptk_panel_width()
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 4 * width + 7, 37, generator=g).to(dtype)  # [E, N, K]: 5 panels, the last partial
    bias = torch.randn(4, 4 * width + 7, generator=g)
    counts = [9, 0, 30, 1]
    x = torch.randn(sum(counts), 37, generator=g)
    starts = torch.tensor([0, 9, 9, 39, 40])
    packed = PackedExperts(list(w))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3, 8):
            torch.set_num_threads(n)
            results.append(packed.grouped_matmul(x, 0, starts, bias))
    finally:
        torch.set_num_threads(threads)
    for got in results[1:]:
        assert torch.equal(got, results[0])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not gemm.library().adaptk_bf16_pairs(),
                    reason="the bfloat16 dot-product build is the one to switch off here")
def test_bfloat16_without_dot_products_widens_the_weights(monkeypatch, tmp_path):
    """The other bfloat16 path, as a CPU without AVX512-BF16 builds it: weights widened to
    float32 as they are loaded, float32 rows (not rounded), every row block and an odd K."""
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gemm, "FLAGS", (*gemm.FLAGS, "-mno-avx512bf16"))
    gemm.library.cache_clear()
    try:
        assert gemm.library().adaptk_bf16_pairs() == 0
        w = torch.randn(3, 45, 33).to(torch.bfloat16)
        packed = PackedExperts(list(w))
        counts = [13, 0, 7]
        x = torch.randn(sum(counts), 33)
        got = packed.grouped_matmul(x, 0, torch.tensor([0, 13, 13, 20]))
        ref = torch.cat([x[:13].double() @ w[0].double().t(), x[13:].double() @ w[2].double().t()])
        torch.testing.assert_close(got, ref.float(), rtol=1e-5, atol=1e-4)
    finally:
        gemm.library.cache_clear()


def test_grouped_matmul_refuses_starts_that_do_not_fit():
    packed = PackedExperts([torch.randn(4, 3), torch.randn(4, 3)])
    x = torch.randn(5, 3)
    for first, starts in [(0, torch.tensor([0, 2, 4])),  # 4 rows for 5
                          (1, torch.tensor([0, 2, 5])),  # experts 1 and 2 of 2
                          (0, torch.tensor([0, 2, 5], dtype=torch.int32))]:
        with pytest.raises(KernelError, match="grouped_matmul takes"):
            packed.grouped_matmul(x, first, starts)


def test_every_row_block_size_and_a_partial_panel():
    """1..3 row blocks of each size the kernel specialises, and outputs past a 32-column panel."""
    lib = gemm.library()
    block, width = lib.adaptk_row_block(), lib.adaptk_panel_width()
    w = torch.randn(width + 5, 33)
    packed = PackedWeight(w)
    for m in range(1, 3 * block + 2):
        x = torch.randn(m, 33)
        torch.testing.assert_close(packed.matmul(x), x @ w.t(), rtol=1e-5, atol=1e-4)


def test_bad_inputs_say_what_to_do():
    with pytest.raises(KernelError, match="float32 or bfloat16 CPU weights.*kernel='exact'"):
        PackedWeight(torch.randn(4, 4, dtype=torch.float16))
    with pytest.raises(KernelError, match=r"floating-point CPU rows \[m, 4\]"):
        PackedWeight(torch.randn(4, 4)).matmul(torch.randn(2, 5))


def test_a_missing_compiler_is_a_build_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-adaptk")
    with pytest.raises(NativeBuildError, match="install gcc or clang"):
        gemm.build()


def test_a_failing_compile_is_a_build_error_with_its_output(monkeypatch, tmp_path):
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho 'cc: error: no such target' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(cc))
    with pytest.raises(NativeBuildError, match="no such target"):
        gemm.build()
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written is left to load


def test_the_build_is_cached_per_source_and_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path))
    first = gemm.build()
    mtime = first.stat().st_mtime_ns
    assert gemm.build() == first and first.stat().st_mtime_ns == mtime  # not compiled again
    monkeypatch.setattr(build, "cpu_fingerprint", lambda: "another cpu")
    assert gemm.build() != first  # another CPU: another binary

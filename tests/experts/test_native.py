"""The native small-row GEMM against torch's matmul, over shapes that cross every row block and
column panel boundary, weight layouts and strides; and its build errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptk.errors import KernelError
from adaptk.experts import native
from adaptk.experts.native import NativeBuildError, PackedWeight

pytestmark = pytest.mark.skipif(native.unavailable() is not None, reason=f"no native kernel: {native.unavailable()}")


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(0, 40),
    n=st.integers(1, 100),
    k=st.integers(1, 70),
    transposed=st.booleans(),
    strided_rows=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matmul_matches_torch(m, n, k, transposed, strided_rows, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, n, generator=g).t() if transposed else torch.randn(n, k, generator=g)  # [n, k]
    x = torch.randn(m, 2 * k if strided_rows else k, generator=g)[:, :k]  # rows with a stride > k
    packed = PackedWeight(w)
    got = packed.matmul(x)
    assert got.shape == (m, n) and got.dtype == torch.float32
    ref = (x.double() @ w.double().t()).float()
    # sequential float32 sums over k: within k float32 ulps of the float64 result
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * k)


def test_every_row_block_size_and_a_partial_panel():
    """1..3 row blocks of each size the kernel specialises, and outputs past a 32-column panel."""
    lib = native.library()
    block, width = lib.adaptk_row_block(), lib.adaptk_panel_width()
    w = torch.randn(width + 5, 33)
    packed = PackedWeight(w)
    for m in range(1, 3 * block + 2):
        x = torch.randn(m, 33)
        torch.testing.assert_close(packed.matmul(x), x @ w.t(), rtol=1e-5, atol=1e-4)


def test_bad_inputs_say_what_to_do():
    with pytest.raises(KernelError, match="onednn-packed"):
        PackedWeight(torch.randn(4, 4, dtype=torch.bfloat16))
    with pytest.raises(KernelError, match=r"float32 \[m, 4\]"):
        PackedWeight(torch.randn(4, 4)).matmul(torch.randn(2, 5))


def test_a_missing_compiler_is_a_build_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-adaptk")
    with pytest.raises(NativeBuildError, match="install gcc or clang"):
        native.build()


def test_a_failing_compile_is_a_build_error_with_its_output(monkeypatch, tmp_path):
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho 'cc: error: no such target' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(cc))
    with pytest.raises(NativeBuildError, match="no such target"):
        native.build()
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written is left to load


def test_the_build_is_cached_per_source_and_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path))
    first = native.build()
    mtime = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == mtime  # not compiled again
    monkeypatch.setattr(native, "_cpu_fingerprint", lambda: "another cpu")
    assert native.build() != first  # another CPU: another binary

"""adaptk's own small-row GEMM (``csrc/small_gemm.c``), compiled on first use for this CPU.

A MoE layer hands each expert a few rows (8 at 512 tokens for 64 experts x top-1), where
general GEMMs (MKL, oneDNN) are inefficient: they re-lay out or re-read the weights for rows
that do little work with them. This kernel keeps each expert's weights in column panels,
streamed once per call (``adaptk bench`` times it against oneDNN: docs/performance.md).

``adaptk.native.build`` compiles the C file once per source, compiler, flags and CPU
(``-march=native``) into adaptk's cache folder, and it is loaded with ``ctypes``; no Python
headers or torch headers are needed, only a C compiler with OpenMP (``$CC``, else ``cc``; gcc has
it). ``NativeBuildError`` says what is missing.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptk.errors import KernelError
from adaptk.native import build as native_build
from adaptk.native.build import NativeBuildError

FLAGS = native_build.FLAGS  # the GEMM's compiler flags (a test builds it with one more)
INSTEAD = "use kernel='onednn-packed'"
_ALIGN = 64  # bytes: the kernel loads packed panels with aligned 64-byte vector loads
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def build() -> Path:
    """Compile ``csrc/small_gemm.c`` for this CPU unless the cache has it; the library's path."""
    return native_build.build_library("small_gemm", "adaptk.experts", ("small_gemm.c",), INSTEAD, FLAGS)


@functools.cache
def library() -> ctypes.CDLL:
    """The compiled kernel, built on first call (``NativeBuildError`` if it cannot be)."""
    lib = ctypes.CDLL(str(build()))
    for pack in (lib.adaptk_pack, lib.adaptk_pack_bf16):
        pack.argtypes = [_PTR, _I64, _I64, _I64, _I64, _PTR]
        pack.restype = None
    lib.adaptk_grouped_gemm.argtypes = [_PTR, _I64, _PTR, _I64, _PTR, _PTR, _I64, _I64, _I64, _PTR, _I64,
                                        ctypes.c_int, ctypes.c_int]
    lib.adaptk_grouped_gemm.restype = None
    for query in (lib.adaptk_panel_width, lib.adaptk_row_block, lib.adaptk_bf16_pairs):
        query.argtypes, query.restype = [], ctypes.c_int
    return lib


def unavailable() -> str | None:
    """Why the native kernel cannot run here, or None if it can."""
    try:
        library()
    except (NativeBuildError, OSError) as err:
        return str(err)
    return None


def _rows(x: torch.Tensor, k: int, pairs: bool) -> torch.Tensor:
    """x [m, K] (any float dtype, CPU) as the kernel reads it: float32 with contiguous rows, or,
    for bfloat16 weights on a CPU with bfloat16 dot products (``pairs``), bfloat16 rows of even
    length (one zero column appended to an odd K), as torch's bfloat16 matmul rounds them."""
    if not x.is_floating_point() or x.dim() != 2 or x.shape[1] != k or x.device.type != "cpu":
        raise KernelError(f"the native kernel multiplies floating-point CPU rows [m, {k}], got {x.dtype} "
                          f"{tuple(x.shape)} on {x.device}")
    if not pairs:
        x = x.to(torch.float32)
        return x if x.stride(1) == 1 else x.contiguous()
    x = x.to(torch.bfloat16)
    if k % 2:
        return F.pad(x, (0, 1))  # [m, K + 1], contiguous
    return x if x.stride(1) == 1 else x.contiguous()


DTYPES = (torch.float32, torch.bfloat16)  # weights; float32 arithmetic either way


class PackedWeight:
    """One weight [N, K] (any strides, float32 or bfloat16, CPU) in the kernel's panel layout.
    bfloat16 weights stay bfloat16 in the panels (half the bytes to stream): multiplied with
    bfloat16 dot products on bfloat16 rows where the CPU has them (``pairs``), else widened to
    float32 exactly as they are loaded; the sums are float32."""

    def __init__(self, w: torch.Tensor) -> None:
        if w.dtype not in DTYPES or w.device.type != "cpu" or w.dim() != 2:
            raise KernelError(f"the native kernel packs 2-D float32 or bfloat16 CPU weights, got {w.dtype} "
                              f"{tuple(w.shape)} on {w.device}; use kernel='exact' for other dtypes")
        lib = library()
        self._gemm = lib.adaptk_grouped_gemm  # bound once: it runs per layer and projection
        width = lib.adaptk_panel_width()
        self.n, self.k = w.shape
        self.dtype, self.bf16 = w.dtype, int(w.dtype == torch.bfloat16)
        self.pairs = bool(self.bf16 and lib.adaptk_bf16_pairs())  # bfloat16 rows, k in pairs
        size = w.element_size()
        elements = (self.n + width - 1) // width * width * (self.k + self.k % 2 if self.pairs else self.k)
        raw = torch.empty(elements + _ALIGN // size, dtype=w.dtype)
        skip = (-raw.data_ptr() % _ALIGN) // size
        self.panels = raw[skip:skip + elements]  # [panels * K * width], 64-byte aligned
        pack = lib.adaptk_pack_bf16 if self.bf16 else lib.adaptk_pack
        pack(w.data_ptr(), w.stride(0), w.stride(1), self.n, self.k, self.panels.data_ptr())
        self._address = (ctypes.c_int64 * 1)(self.panels.data_ptr())

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x [m, K] -> x @ W^T [m, N] float32, on torch's intra-op thread count (the same result
        on any count)."""
        x = _rows(x, self.k, self.pairs)
        y = torch.empty(x.shape[0], self.n, dtype=torch.float32)  # [m, N]: every element written
        starts = (ctypes.c_int64 * 2)(0, x.shape[0])
        self._gemm(x.data_ptr(), x.stride(0), starts, 1, self._address, None, 0, self.k, self.n,
                   y.data_ptr(), self.n, self.bf16, torch.get_num_threads())
        return y


class PackedExperts:
    """One projection of every expert ([E, N, K] weights, any strides) packed for
    ``grouped_matmul``: all the experts' rows of a layer in one call."""

    def __init__(self, weights: list[torch.Tensor]) -> None:
        self.experts = [PackedWeight(w) for w in weights]
        if len({(p.n, p.k, p.dtype) for p in self.experts}) > 1:
            raise KernelError("PackedExperts takes weights of one shape and dtype")
        first = self.experts[0] if weights else None  # every expert has its shape and dtype
        self.n, self.k, self.dtype, self.bf16, self.pairs = (
            (first.n, first.k, first.dtype, first.bf16, first.pairs) if first is not None
            else (0, 0, torch.float32, 0, False))
        # [E] int64: where each expert's panels lie, handed to C as it is
        self.addresses = torch.tensor([p.panels.data_ptr() for p in self.experts], dtype=torch.int64)
        self._gemm = library().adaptk_grouped_gemm

    def grouped_matmul(self, x: torch.Tensor, first: int, starts: torch.Tensor,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of experts ``first``, ``first + 1``, ...: x [V, K], grouped by expert, the rows of
        group g being [starts[g], starts[g+1]) - starts[0] (starts int64 [G+1], CPU) -> x @ W_e^T
        (+ bias [E, N] of e) per group, [V, N] float32; torch's intra-op thread count."""
        x = _rows(x, self.k, self.pairs)
        groups = starts.numel() - 1
        if (starts.dtype != torch.int64 or starts.device.type != "cpu" or not starts.is_contiguous() or groups < 0
                or not 0 <= first <= len(self.experts) - groups or int(starts[-1] - starts[0]) != x.shape[0]):
            raise KernelError(f"grouped_matmul takes contiguous int64 CPU starts [G+1] of experts {first}.. within "
                              f"{len(self.experts)} experts, spanning the {x.shape[0]} rows of x; got "
                              f"{starts.dtype} {tuple(starts.shape)}")
        y = torch.empty(x.shape[0], self.n, dtype=torch.float32)  # [V, N]: every row of a group written
        if bias is not None:
            bias = bias[first:first + groups].to(torch.float32).contiguous()  # [G, N]: the run's experts only
        self._gemm(x.data_ptr(), x.stride(0), starts.data_ptr(), groups,
                   self.addresses.data_ptr() + 8 * first,
                   bias.data_ptr() if bias is not None else None, self.n,
                   self.k, self.n, y.data_ptr(), self.n, self.bf16, torch.get_num_threads())
        return y

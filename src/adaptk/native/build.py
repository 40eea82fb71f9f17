"""adaptk's own small-row GEMM (``csrc/small_gemm.c``), compiled on first use for this CPU.

A MoE layer hands each expert a few rows (8 at 512 tokens for 64 experts x top-1), where
general GEMMs (MKL, oneDNN) are inefficient: they re-lay out or re-read the weights for rows
that do little work with them. This kernel keeps each expert's weights in column panels,
streamed once per call (``adaptk bench`` times it against oneDNN: docs/performance.md).

The C file is compiled once per source (with the headers it includes), compiler, flags and CPU
(``-march=native``) into a cache folder (``$ADAPTK_CACHE_DIR``, else ``$XDG_CACHE_HOME/adaptk``,
else ``~/.cache/adaptk``) and loaded with ``ctypes``; no Python headers or torch headers are needed, only a C compiler
with OpenMP (``$CC``, else ``cc``; gcc has it). ``NativeBuildError`` says what is missing.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptk.errors import KernelError

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-std=gnu11", "-fopenmp", "-shared", "-fPIC")
LIBS = ("-lm",)  # after the source, where the linker looks for what it needs
_ALIGN = 64  # bytes: the kernel loads packed panels with aligned 64-byte vector loads
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class NativeBuildError(KernelError):
    """The native kernel could not be compiled or loaded here."""


def source(name: str) -> bytes:
    """``csrc/NAME`` (with its extension), as the package ships it."""
    return (resources.files("adaptk.experts") / "csrc" / name).read_bytes()


_INCLUDE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]+"([\w.-]+)"', re.MULTILINE)


def headers(*codes: bytes) -> dict[str, bytes]:
    """The package's headers that the sources ``codes`` include (``#include "NAME"``, from
    ``csrc/``), by name: written beside the sources when they compile, and part of the cache key
    (``counters.h`` declares the statistics' counter layout)."""
    names = sorted({m.decode() for code in codes for m in _INCLUDE.findall(code)})
    return {name: source(name) for name in names}


def header_key(found: dict[str, bytes]) -> list[bytes | str]:
    """The cache key's share of ``headers``' answer: each name and its bytes."""
    return [part for name, code in found.items() for part in (name, code)]


def cpu_fingerprint() -> str:
    """What -march=native compiles for: the CPU model and flags (so a shared cache folder never
    hands one CPU another's binary)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(dict.fromkeys(lines))
    except OSError:
        return platform.processor() or platform.machine()


def cache_dir() -> Path:
    root = os.environ.get("ADAPTK_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adaptk"


def compiler(instead: str, variable: str = "CC", default: str = "cc") -> str:
    """The C compiler's path (``$CC``, else ``cc``; with "CXX", "c++": the C++ compiler's), or
    ``NativeBuildError`` saying how to get one, or ``instead``: what to do without."""
    cc = os.environ.get(variable, default)
    path = shutil.which(cc)
    if path is None:
        lang = "C++" if variable == "CXX" else "C"
        raise NativeBuildError(f"adaptk's native code needs a {lang} compiler, and {cc!r} is not on PATH: install "
                               f"gcc or clang (or set {variable}), or {instead}")
    return path


def compile_cached(name: str, key: list[bytes | str], steps: Callable[[Path, Path], list[list[str]]],
                   instead: str, suffix: str = ".so") -> Path:
    """Run the compiler command lines ``steps(tmp, out)`` (which write the library ``out`` in
    the empty folder ``tmp``) unless the cache has ``name``'s library for ``key`` (everything
    the binary depends on: sources, compilers, flags, CPU); return the library's path.
    ``NativeBuildError`` with the compiler's output (and ``instead``: what to do) if one fails."""
    digest = hashlib.sha256(b"\0".join(k if isinstance(k, bytes) else k.encode() for k in key)).hexdigest()[:16]
    lib = cache_dir() / f"{name}-{digest}{suffix}"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    log.info("adaptk: compiling %s (once for this version, compiler and CPU)", name)
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        out = Path(tmp) / lib.name
        for argv in steps(Path(tmp), out):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                shown = " ".join(a for a in argv if not a.startswith(tmp))  # not the temporary paths
                raise NativeBuildError(f"compiling {name} failed ({shown}):\n{done.stderr.strip()}\n"
                                       f"fix the compiler set-up, or {instead}")
        os.replace(out, lib)  # atomic: a concurrent build of the same key writes the same bytes
    log.info("adaptk: compiled %s into %s", name, lib)
    return lib


def build(name: str = "small_gemm") -> Path:
    """Compile ``csrc/NAME.c`` (the small-row GEMM, or ``route_topk`` for the fused routing step
    and the native router) for this CPU unless the cache has it; return the library's path."""
    instead = "use kernel='onednn-packed'" if name == "small_gemm" else "adaptk routes with torch ops"
    cc, code = compiler(instead), source(f"{name}.c")
    found = headers(code)

    def steps(tmp: Path, out: Path) -> list[list[str]]:
        (tmp / f"{name}.c").write_bytes(code)
        for header, text in found.items():
            (tmp / header).write_bytes(text)
        return [[cc, *FLAGS, str(tmp / f"{name}.c"), "-o", str(out), *LIBS]]

    key = [code, cc, " ".join(FLAGS + LIBS), cpu_fingerprint(), *header_key(found)]
    return compile_cached(name, key, steps, instead)


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


DTYPES = (torch.float32, torch.bfloat16)  # weights (and the native router's inputs); float32 arithmetic either way


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

"""Who multiplies one expert's rows on the CPU: the registry of matmul kernels.

The variable-K back-end runs experts one at a time on contiguous row groups (``cpu_fast``), or
runs of consecutive experts per call for a kernel with ``grouped``. What does the groups' two
projections is a kernel:

- ``exact`` (default): the very calls of the back-end being replaced (``torch.mm`` as CPU
  ``grouped_mm`` does, or ``F.linear`` as the eager loop does), so that keeping every slot gives
  the unpatched model's output bit for bit. On x86 these go to the BLAS (MKL).
- ``onednn``: oneDNN's inner-product primitive on the weights as they are (no extra memory).
  Not bit-identical (another summation order; float32 within rounding of the exact kernel).
  Made for the few-dozen-row groups a MoE layer produces, where the BLAS is slow.
- ``onednn-packed``: the same, with each expert's weights re-laid out once into oneDNN's
  blocked format, which removes the per-call re-layout that dominates small groups. Costs a
  second copy of the expert weights. Groups of 1-3 rows are padded to ``PAD_ROWS`` rows
  (oneDNN's 4-row kernel reads packed weights faster than its 1-3 row ones; the padding rows
  are zero and dropped from the output, never added to anything).
- ``native``: adaptk's own small-row GEMM (``adaptk.experts.gemm``, C compiled on first use
  for this CPU), each expert's weights re-laid out once into column panels that one call
  streams once; float32 or bfloat16 weights (bfloat16 streamed as it is, half the bytes, and
  multiplied with AVX512-BF16 dot products where the CPU has them, else widened exactly to
  float32), float32 sums; the threads share out the panels. It runs the rows of many experts
  in one call (``grouped``, runs of up to ``GROUP_ROWS`` rows), so a layer of 64 experts with
  8 rows each is two calls per projection instead of 64: made for the 1-16 rows per expert of
  fine-grained MoE layers. Within float32 rounding of the exact kernel in float32 (sequential
  float32 sums), within bfloat16 rounding in bfloat16 (each projection rounded once, from float32).

The oneDNN and native kernels run where autograd records nothing (inference); under autograd
they raise ``KernelError`` rather than silently switching arithmetic.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaptk.errors import KernelError
from adaptk.experts import gemm
from adaptk.experts.gemm import PackedExperts

log = logging.getLogger(__name__)

PAD_ROWS = 4  # onednn-packed: 1-3 row groups are padded to 4 zero-filled rows (oneDNN's 1-3 row
#               kernels read the packed weights slower than its 4-row one)
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
GROUP_ROWS = 256  # native: consecutive experts are run in one call until they hold this many rows
#                   (bounds the [rows, 2I] intermediate; an expert with more rows runs alone)


def no_grad_needed(*tensors: torch.Tensor | None) -> bool:
    return not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors)


def _projection(experts: nn.Module, up: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stacked weight [E, out, in] (or [E, in, out] if transposed) and bias [E, out] of one
    projection."""
    name = ("gate_up_proj" if experts.has_gate else "up_proj") if up else "down_proj"
    return getattr(experts, name), (getattr(experts, name + "_bias") if experts.has_bias else None)


class ExactMatmul:
    """The mirrored back-end's own calls: slot order (grouped_mm) x.to(W) @ W^T then + b;
    expert order (eager) F.linear with the bias fused, or x @ W + b for transposed weights."""

    exact = True
    group_rows = 1  # one expert per call

    def __init__(self, experts: nn.Module, order: str) -> None:
        self.experts, self.order = experts, order

    def __call__(self, up: bool, e: int, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """x [c, in] -> [c, out] for expert ``e``; ``out`` (no bias only) receives the result."""
        w, b = _projection(self.experts, up)
        w, b = w[e], (b[e] if b is not None else None)
        if self.order == "slot" or self.experts.is_transposed:
            wt = w if self.experts.is_transposed else w.t()  # [in, out]
            xin = x.to(wt.dtype) if self.order == "slot" else x
            y = torch.mm(xin, wt, out=out) if out is not None else xin @ wt
            if b is None:
                return y
            return y.add_(b) if self.order == "slot" else y + b
        if out is not None:
            return torch.mm(x, w.t(), out=out)  # = F.linear(x, w) without bias
        return F.linear(x, w, b)


class PackedKernel:
    """Base of the inference kernels: weights [out, in] per expert, optionally re-laid out once
    (``pack``) into the kernel's own format.

    Packed weights are rebuilt when a weight tensor is replaced or modified in place (its
    ``_version`` moves), so a patched model whose weights are reloaded stays correct."""

    exact = False
    packed = True
    group_rows = 1  # experts run one per call; a kernel with ``grouped`` raises it

    def __init__(self, experts: nn.Module) -> None:
        self.experts = experts
        self._key: tuple | None = None
        self._up: list = []
        self._down: list = []

    def stale(self) -> bool:
        """True before the first ``pack`` and after the weights changed."""
        return self.packed and self._key != self._weights_key()

    def _weights_key(self) -> tuple:
        return tuple((w.data_ptr(), w._version) for w, _ in (_projection(self.experts, True),
                                                             _projection(self.experts, False)))

    def _plain(self, up: bool, e: int) -> torch.Tensor:
        w = _projection(self.experts, up)[0][e]
        return w.t() if self.experts.is_transposed else w  # [out, in]

    def _pack_one(self, w: torch.Tensor):
        raise NotImplementedError

    def _pack_all(self, weights: list[torch.Tensor]):
        """One projection of every expert, re-laid out; indexed by expert."""
        return [self._pack_one(w) for w in weights]

    def pack(self) -> None:
        """Re-lay out every expert's weights (a second copy of the expert weights)."""
        with torch.no_grad():
            n = self.experts.num_experts
            self._up = self._pack_all([self._plain(True, e) for e in range(n)])
            self._down = self._pack_all([self._plain(False, e) for e in range(n)])
        self._key = self._weights_key()
        log.info("adaptk: packed %d experts' weights for %s", self.experts.num_experts, type(self).__name__)

    def _ready(self, up: bool, x: torch.Tensor) -> torch.Tensor | None:
        """Refuses under autograd, re-packs stale weights; the projection's biases [E, out] or None."""
        w_all, b_all = _projection(self.experts, up)
        if not no_grad_needed(x, w_all, b_all):
            raise KernelError(
                f"the {type(self).__name__} kernel is for inference: run the model under torch.inference_mode() "
                "or torch.no_grad(), or patch with kernel='exact' to train or take gradients"
            )
        if self.stale():
            self.pack()
        return b_all

    def _weights(self, up: bool, e: int, x: torch.Tensor):
        """(packed or plain weight, bias or None) of expert ``e``; refuses under autograd."""
        b_all = self._ready(up, x)
        w = (self._up if up else self._down)[e] if self.packed else self._plain(up, e)
        return w, (b_all[e] if b_all is not None else None)


class OneDNNMatmul(PackedKernel):
    """oneDNN inner products, on the weights as they are or pre-packed into oneDNN's blocked
    format (1-3 row groups padded to ``PAD_ROWS``)."""

    def __init__(self, experts: nn.Module, packed: bool) -> None:
        super().__init__(experts)
        self.packed = packed

    def _pack_one(self, w: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), None)

    def __call__(self, up: bool, e: int, x: torch.Tensor) -> torch.Tensor:
        """x [c, in] -> [c, out] for expert ``e``, bias included."""
        w, b = self._weights(up, e, x)
        rows = x.shape[0]
        x = x.to(w.dtype)  # packed or plain, w keeps the weights' dtype
        if self.packed and rows < PAD_ROWS:
            x = F.pad(x, (0, 0, 0, PAD_ROWS - rows))  # [PAD_ROWS, in], zero rows appended
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")[:rows]  # [c, out]


class NativeMatmul(PackedKernel):
    """adaptk's small-row GEMM (``adaptk.experts.gemm``) on weights packed into column panels:
    float32 or bfloat16 weights, float32 sums, CPU, torch's intra-op thread count. ``grouped``
    runs the rows of a run of experts in one call, so the per-expert work in Python is paid
    per run."""

    group_rows = GROUP_ROWS

    def _pack_all(self, weights: list[torch.Tensor]) -> PackedExperts:
        return PackedExperts(weights)

    def grouped(self, up: bool, first: int, starts: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x [V, in] holding the rows of experts first, first + 1, ... (group g: rows
        [starts[g], starts[g+1]) - starts[0]) -> [V, out] in the weights' dtype, biases included
        (summed in float32, rounded once)."""
        b_all = self._ready(up, x)
        packed = self._up if up else self._down
        return packed.grouped_matmul(x, first, starts, b_all).to(packed.dtype)  # [V, out]


def _onednn_unavailable(w: torch.Tensor) -> str | None:
    if not onednn_available():
        return "needs oneDNN (mkldnn), which this torch build lacks"
    if w.dtype not in _ONEDNN_DTYPES:
        return f"supports float32 and bfloat16 weights, got {w.dtype}"
    return None


def _native_unavailable(w: torch.Tensor) -> str | None:
    if w.dtype not in gemm.DTYPES:
        return f"supports float32 and bfloat16 weights, got {w.dtype}"
    return gemm.unavailable()


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: how to build it for an experts module (the built kernel says whether it is
    ``exact``), whether it runs on the CPU only, and why it cannot run on given weights (None
    if it can; no check at all for a kernel that runs wherever torch does)."""

    name: str
    build: Callable[[nn.Module, str], ExactMatmul | PackedKernel]
    cpu_only: bool = False
    unavailable: Callable[[torch.Tensor], str | None] | None = None


KERNELS: dict[str, KernelSpec] = {}


def register_kernel(spec: KernelSpec) -> KernelSpec:
    KERNELS[spec.name] = spec
    return spec


register_kernel(KernelSpec("exact", ExactMatmul))
register_kernel(KernelSpec("onednn", lambda ex, order: OneDNNMatmul(ex, packed=False), True, _onednn_unavailable))
register_kernel(KernelSpec("onednn-packed", lambda ex, order: OneDNNMatmul(ex, packed=True), True,
                           _onednn_unavailable))
register_kernel(KernelSpec("native", lambda ex, order: NativeMatmul(ex), True, _native_unavailable))


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def check_kernel_name(name: str) -> None:
    """``KernelError`` if no kernel is registered as ``name``."""
    if not isinstance(name, str) or name not in KERNELS:
        raise KernelError(f"unknown kernel {name!r}; choose one of {sorted(KERNELS)}")


def check_kernel(experts: nn.Module, name: str) -> None:
    """``KernelError`` saying why kernel ``name`` cannot run on this experts module, if it cannot."""
    check_kernel_name(name)
    spec = KERNELS[name]
    if not spec.cpu_only and spec.unavailable is None:
        return
    w = _projection(experts, True)[0]
    if spec.cpu_only and w.device.type != "cpu":
        raise KernelError(f"kernel {name!r} runs on the CPU but the experts are on {w.device}; "
                          "use kernel='exact' there")
    why = spec.unavailable(w) if spec.unavailable is not None else None
    if why is not None:
        raise KernelError(f"kernel {name!r} {why}; use kernel='exact' or another kernel")


# kernels still referenced somewhere (a patch handle, a bench), per experts module: a new patch of
# the same module reuses them instead of packing the weights again; nothing is kept alive here
_LIVE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, str], weakref.ref]] = weakref.WeakKeyDictionary()


def kernel_for(experts: nn.Module, name: str, order: str) -> ExactMatmul | PackedKernel:
    """Kernel ``name`` for one experts module (packing its weights if the kernel packs);
    ``KernelError`` says why it cannot run. A kernel of this module still alive elsewhere (held
    by a patch handle) is reused, so patching again does not pack again."""
    check_kernel(experts, name)
    live = _LIVE.setdefault(experts, {})
    ref = live.get((name, order))
    kernel = ref() if ref is not None else None
    if kernel is None:
        kernel = KERNELS[name].build(experts, order)
        live[(name, order)] = weakref.ref(kernel)
    if isinstance(kernel, PackedKernel) and kernel.stale():
        kernel.pack()
    return kernel

"""The routing step of a softmax top-k router in one C call (``routing/csrc/route_topk.c``).

At one token (a decode step) the torch ops of the routing step cost more in dispatch than in
arithmetic, the more so when the experts of the layer before have evicted the caches. For the
common case, a router whose experts are ranked by the softmax probabilities and a policy whose
k is a step function of the entropy (``Policy.rank_thresholds``), the top-k, the threshold
comparison, the sentinel fill, the kept weights (renormalised for K <= 2) and the NaN/Inf check
of the logits run as one pass in C, compiled for this CPU like the native kernel.

It gives torch's bits or none: the entropy is torch's (``entropy_nats``); a row whose K + 1
largest probabilities tie, where the C code cannot promise torch.topk's order among them, takes
its top K from torch.topk on those rows (``decide``'s own call: the same order), the other rows
staying in C; a NaN probability declines the call and the caller runs the torch ops. (Ties
are common in bfloat16, so they are handled row by row rather than by declining the call.)

``fused_router`` binds the whole default router call through ``binding``'s C++ extension where
it builds: the model's own linear layer and softmax (the same at:: ops, the same bits), torch's
entropy, the C step and the statistics' counts, with no Python between them.

``NativeRouter`` goes further for inference (``adaptk.patch(..., routing="native")``): the
router's linear layer, softmax and entropy too, and the patch's statistics, so that a whole
router call is one C call (``csrc/route_native.c``; ``route_native``: one call of one;
``NativeRouter.route``, the patch's call, goes through the C++ binding of ``binding`` where it
builds). Its own summation order and libm's expf/logf: logits within float32 rounding of torch's (one bfloat16
unit in the last place), entropies within a few float32 units, ties kept lower index first; not
bit for bit, like the native experts kernel.

Shapes: T tokens, H hidden size, N experts, K = len(tau).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from adaptk.native.build import NativeBuildError, build_library
from adaptk.routing import binding, counters
from adaptk.routing.select import Selection
from adaptk.routing.stats import LayerStats

log = logging.getLogger(__name__)

OK, NONFINITE, DECLINED = 0, 1, 2  # what adaptk_route_topk returns
LOGIT_CODES = {torch.float32: 1, torch.bfloat16: 2, torch.float16: 3}  # 0: do not check
MAX_K = 64
OUT_CODES = {"float32": 0, "logits": 1, "hidden": 2}  # RenormalisedTopK.out -> the C++ Fused's code
MAX_N = 4096  # experts the native router takes (route_native.c's MAXN)
DTYPES = (torch.float32, torch.bfloat16)  # the native router's inputs (both of one dtype)
SOURCES = ("route_topk.c", "route_native.c")  # csrc/: the routing step and the native router
INSTEAD = "adaptk routes with torch ops"
NATIVE_MAX_TOKENS = 16  # calls of more tokens: torch's GEMM is faster and its dispatch a small share
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def build() -> Path:
    """Compile the two C routers into one library for this CPU unless the cache has it; its path."""
    return build_library("routers", "adaptk.routing", SOURCES, INSTEAD)


@functools.cache
def _library() -> ctypes.CDLL:
    """The two C routers, compiled into one library (or found in the cache) and loaded once, the
    entry points Python calls typed."""
    lib = ctypes.CDLL(str(build()))
    lib.adaptk_route_topk.argtypes = [_PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, ctypes.c_int, ctypes.c_int,
                                      _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR]
    lib.adaptk_route_rows.argtypes = [_PTR, _PTR, _PTR, _I64, _I64, _I64, _PTR, _PTR, ctypes.c_int,
                                      _PTR, _PTR, _PTR, _PTR, _PTR]
    lib.adaptk_route_native.argtypes = [_PTR, _PTR, _I64, _I64, _I64, _I64, ctypes.c_int, _PTR, ctypes.c_int,
                                        _PTR, _PTR, _PTR, ctypes.c_int, _PTR, _PTR, _PTR, _PTR, _I64, _PTR]
    lib.adaptk_route_topk.restype = lib.adaptk_route_native.restype = ctypes.c_int
    lib.adaptk_route_rows.restype = None
    return lib


@functools.cache
def unavailable() -> str | None:
    """Why the fused routing step and the native router cannot run here (no C compiler, ...),
    or None if they can (asked once per process: a failing compiler is not run again for every
    layer)."""
    try:
        _library()
    except (NativeBuildError, OSError) as err:
        return str(err)
    return None


class Fused(NamedTuple):
    status: int  # OK, NONFINITE (a logit is NaN/Inf) or DECLINED (use the torch ops)
    selection: Selection | None
    weights: torch.Tensor | None  # [T, K] float32: kept probabilities, renormalised if asked


def route_topk(probs: torch.Tensor, entropy: torch.Tensor, tau: torch.Tensor, logits: torch.Tensor | None,
               renormalise: bool) -> Fused:
    """probs [T, N] float32 contiguous CPU (the ranking scores too), entropy [T] float32 (torch's
    ``entropy_nats(probs)``), tau [K] float32 rank thresholds, logits [T, N] (checked for NaN/Inf
    first; None: not checked) -> the ``Selection`` that ``decide`` returns for a sorted top-k
    of probs, and the kept probabilities (divided by their sum if ``renormalise``, K <= 2)."""
    t, n = probs.shape
    k = tau.shape[0]
    if renormalise and k > 2:
        raise ValueError("the fused step renormalises only K <= 2 (torch's order of longer sums is its own)")
    cand = torch.empty(t, k, dtype=torch.int64)
    indices = torch.empty(t, k, dtype=torch.int64)
    drop = torch.empty(t, k, dtype=torch.bool)
    top = torch.empty(t, k, dtype=torch.float32)
    weights = torch.empty(t, k, dtype=torch.float32)
    tied = torch.empty(t, dtype=torch.int64)  # [T]: the rows whose top K + 1 tie, the first ``ntied``
    ntied = _I64(0)
    code = 0 if logits is None else LOGIT_CODES[logits.dtype]
    lib = _library()
    outputs = (cand.data_ptr(), indices.data_ptr(), drop.data_ptr(), top.data_ptr(), weights.data_ptr())
    status = lib.adaptk_route_topk(
        probs.data_ptr(), t, n, k, entropy.data_ptr(), tau.data_ptr(), 0 if logits is None else logits.data_ptr(),
        code, int(renormalise), *outputs, tied.data_ptr(), ctypes.byref(ntied))
    if status != OK:
        return Fused(status, None, None)
    if ntied.value:  # those rows' top K as decide's torch.topk gives them (torch's order among ties)
        rows = tied[:ntied.value]
        top_k = torch.topk(probs.index_select(0, rows), k, dim=-1, sorted=True)
        val, idx = top_k.values.contiguous(), top_k.indices.contiguous()  # [R, K] each
        lib.adaptk_route_rows(val.data_ptr(), idx.data_ptr(), rows.data_ptr(), rows.shape[0], n, k,
                              entropy.data_ptr(), tau.data_ptr(), int(renormalise), *outputs)
    return Fused(OK, Selection(indices, cand, drop, entropy, None, top), weights)


def eligible(probs: torch.Tensor, logits: torch.Tensor, k: int) -> bool:
    """Whether this call's tensors are ones ``route_topk`` takes (else: the torch ops)."""
    return (probs.device.type == "cpu" and probs.dtype == torch.float32 and probs.dim() == 2
            and probs.shape[0] > 0 and k <= min(probs.shape[1], MAX_K) and probs.is_contiguous()
            and logits.dtype in LOGIT_CODES and logits.is_contiguous() and logits.shape == probs.shape
            and not probs.requires_grad)


def fused_router(tau: torch.Tensor, renormalise: bool, out: str, *, flatten: bool,
                 stats: LayerStats | None) -> Callable[..., tuple[torch.Tensor, ...] | None] | None:
    """One layer's default router call in C++ (``binding``'s ``Fused``), or None where the
    extension cannot build (then the patch runs the model's scores and ``route_topk`` through
    ctypes: the same bits, more dispatch). For a family whose scores are ``F.linear(hidden,
    weight)`` (hidden flattened to [T, H] first if ``flatten``) and their float32 softmax, a
    ``RenormalisedTopK(renormalise, out)`` weighting and rank thresholds tau [K]. The returned
    callable takes (hidden, router weight [N, H]) and gives (logits [T, N], weights [T, K],
    indices [T, K]) as the torch ops do (rows that tie take torch.topk's order, as in
    ``route_topk``), or None for a call the torch ops must route (a NaN/Inf logit, autograd,
    another device or dtype). It counts the tokens it routes in the statistics in C, under their
    lock, as the native router does: the same counts as the torch path's fold, the entropy
    moments summed token by token (the fold sums its pending tokens in torch's order: the two
    agree to float64 rounding)."""
    if binding.unavailable() is not None:
        return None
    return binding.extension().Fused(tau, renormalise, OUT_CODES[out], flatten, stats)


class Routed(NamedTuple):
    status: int  # OK, or NONFINITE (a logit is NaN/Inf: use the torch ops, which raise or count it)
    logits: torch.Tensor | None  # [T, N] in the hidden dtype
    indices: torch.Tensor | None  # [T, K] int64: the kept experts, N where dropped
    weights: torch.Tensor | None  # [T, K] float32, or the hidden dtype (``weights_as_input``)
    selection: Selection | None  # the whole ``Selection`` (no ``top_probs``), where asked for


class NativeRouter:
    """The whole router of a softmax top-k family as one C call, bound to a layer: thresholds
    tau [K] float32, renormalisation (any K), the weights' dtype (the hidden dtype if
    ``weights_as_input``, rounded as torch rounds, else float32), whether the model's scores
    flatten hidden to [T, H] (``flatten``; ``MoEFamily.flattens_hidden``) and the statistics to count
    the tokens in (``LayerStats``, on the CPU: the C code adds to its counters in place; nothing
    is counted for a call with a NaN/Inf logit). All fixed when built, so that a call is three
    allocations (six with ``selection``) and one C call: at one token, after a layer has evicted
    the caches, each torch op and each line of Python costs more than the arithmetic. (State: the
    addresses it passes to C, kept alive with their tensors.)

    A call takes hidden [T, H] and weight [N, H] (both float32 or both bfloat16, contiguous CPU;
    see ``native_eligible``) -> logits = hidden @ weight.T, probabilities = softmax(logits in
    float32), their entropy, and the indices and weights ``route_topk`` gives for those, with the
    ``Selection`` (no ``top_probs``) if ``selection``. One thread, any T (``native_eligible``
    keeps it to few tokens).

    ``route`` is the patch's call (its checks included): the C++ binding's (``binding``: checks,
    allocations, lock and call in C++, the same C code) where that builds and ``cxx``, else
    ``route_ctypes``."""

    def __init__(self, tau: torch.Tensor, renormalise: bool, *, weights_as_input: bool = False,
                 stats: LayerStats | None = None, selection: bool = True, flatten: bool = True,
                 cxx: bool = True) -> None:
        self._fn = _library().adaptk_route_native
        self._tau, self._k, self._renorm = tau, tau.shape[0], int(renormalise)
        self._as_input, self._stats, self._selection, self._flatten = weights_as_input, stats, selection, flatten
        self._counts, self._kmax, self._moments = 0, 0, 0
        if stats is not None:
            if not stats.counts.is_cpu:
                raise ValueError("the native router counts into CPU statistics only; the layer is on "
                                 f"{stats.counts.device}: route it with routing='fused'")
            if stats.kmax < self._k:
                raise ValueError(f"the statistics count k up to {stats.kmax}; this router keeps up to {self._k}")
            lay = counters.layout(stats.kmax, stats.num_experts)  # where the C code counts
            if stats.counts.numel() != lay.size or stats.entropy_moments.numel() != lay.moments_size:
                raise ValueError(f"the statistics' counters hold {stats.counts.numel()} and "
                                 f"{stats.entropy_moments.numel()} values; counters.h lays out {lay.size} and "
                                 f"{lay.moments_size} for kmax {stats.kmax} and {stats.num_experts} experts")
            self._counts, self._kmax, self._moments = (stats.counts.data_ptr(), stats.kmax,
                                                       stats.entropy_moments.data_ptr())
        # the patch's call (see ``route_ctypes``): the C++ binding's Router where it builds
        self.route = self.route_ctypes
        if cxx and binding.unavailable() is None:
            self.route = binding.extension().Router(tau, bool(renormalise), weights_as_input, NATIVE_MAX_TOKENS,
                                                    flatten, stats)

    def route_ctypes(self, hidden: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """The patch's call (``route``): hidden [..., H] (flattened to [T, H] if ``flatten``, as
        the model's scores do; else [T, H] only) and weight [N, H] ->
        (logits [T, N], weights [T, K], indices [T, K]), counted in the statistics, or None for
        a call the other paths must route (``native_eligible`` false, a NaN/Inf logit: then
        nothing is counted). ``route`` does the same in C++ where ``binding`` builds."""
        same_h = hidden.dim() > 0 and hidden.shape[-1] == weight.shape[-1]
        x = hidden.reshape(-1, weight.shape[-1]) if self._flatten and hidden.dim() != 2 and same_h else hidden
        if not native_eligible(x, weight, self._k):
            return None
        out = self(x, weight)
        return (out.logits, out.weights, out.indices) if out.status == OK else None

    def __call__(self, hidden: torch.Tensor, weight: torch.Tensor) -> Routed:
        t, h = hidden.shape
        n, k, stats = weight.shape[0], self._k, self._stats
        if stats is not None and stats.num_experts != n:
            raise ValueError(f"the statistics count {stats.num_experts} experts; this router has {n}")
        bf16 = hidden.dtype is torch.bfloat16
        logits = torch.empty(t, n, dtype=hidden.dtype)
        indices = torch.empty(t, k, dtype=torch.int64)
        weights = torch.empty(t, k, dtype=hidden.dtype if self._as_input else torch.float32)
        sel = (torch.empty(t, dtype=torch.float32), torch.empty(t, k, dtype=torch.int64),
               torch.empty(t, k, dtype=torch.bool)) if self._selection else None  # entropy, candidates, drop
        entropy, cand, drop = (x.data_ptr() for x in sel) if sel is not None else (0, 0, 0)
        args = (hidden.data_ptr(), weight.data_ptr(), t, h, n, k, int(bf16), self._tau.data_ptr(), self._renorm,
                logits.data_ptr(), indices.data_ptr(), weights.data_ptr(), int(bf16 and self._as_input), entropy,
                cand, drop, self._counts, self._kmax, self._moments)
        if stats is None:
            status = self._fn(*args)
        else:
            with stats.lock:  # the C code adds to the counters in place: one thread at a time
                status = self._fn(*args)
        if status == DECLINED:  # native_eligible admits no such shape
            raise ValueError(f"the native router takes T >= 1, K <= {MAX_K} and K <= N <= {MAX_N}; "
                             f"got T={t}, K={k}, N={n}")
        if status != OK:
            return Routed(status, None, None, None, None)
        return Routed(OK, logits, indices, weights,
                      None if sel is None else Selection(indices, sel[1], sel[2], sel[0], None, None))


def route_native(hidden: torch.Tensor, weight: torch.Tensor, tau: torch.Tensor, renormalise: bool,
                 **options) -> Routed:
    """One call of a ``NativeRouter(tau, renormalise, **options)``: see there."""
    return NativeRouter(tau, renormalise, cxx=False, **options)(hidden, weight)  # its route is not called


def native_eligible(hidden: torch.Tensor, weight: torch.Tensor, k: int) -> bool:
    """Whether ``route_native`` takes this call (else the fused step or the torch ops): hidden
    [T, H] with 1 <= T <= NATIVE_MAX_TOKENS and weight [N, H] of one dtype (float32, bfloat16),
    contiguous, on the CPU, K <= N; never under autograd."""
    return (hidden.is_cpu and weight.is_cpu and hidden.dtype is weight.dtype and hidden.dtype in DTYPES
            and hidden.dim() == 2 and 0 < hidden.shape[0] <= NATIVE_MAX_TOKENS and hidden.shape[1] == weight.shape[1]
            and k <= min(weight.shape[0], MAX_K) and weight.shape[0] <= MAX_N
            and hidden.is_contiguous() and weight.is_contiguous()
            and not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)))

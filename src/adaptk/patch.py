"""``adaptk.patch(model, policy)``: route every MoE layer of one model instance through a policy.

Only the instance handed in changes: each MoE layer's router and experts module gets an
instance-level ``forward`` (or, under an accelerate device hook, its ``_old_forward``), and
``unpatch()`` puts back exactly what was there. Nothing is patched at import.

The patched router computes the model's own scores (``MoEFamily.scores``), lets the policy pick
k per token, keeps the model's own top-k experts of that many and weights them by the model's
convention; dropped slots carry the sentinel index N and weight 0. The patched experts module
runs adaptk's variable-K back-end, which never multiplies a dropped slot and counts the rows
each expert's matmuls receive.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from adaptk.errors import KernelError, PatchError, RoutingInputError
from adaptk.experts.kernels import check_kernel, check_kernel_name, kernel_for
from adaptk.experts.variable_k import bind as bind_experts
from adaptk.experts.variable_k import register_with_transformers
from adaptk.models.families import RenormalisedTopK
from adaptk.models.registry import MoELayer, find_moe_layers
from adaptk.routing import fused
from adaptk.routing.entropy import entropy_nats
from adaptk.routing.policies import Policy
from adaptk.routing.select import decide
from adaptk.routing.stats import LayerStats, PatchReport

log = logging.getLogger(__name__)
_MISSING = object()
_MARK = "_adaptk_patch"
CHECK_MODES = ("auto", "eager", "deferred")
ROUTING_MODES = ("torch", "fused", "native")


def _forward_slot(module: nn.Module) -> str:
    """accelerate's device hooks wrap ``forward`` and call ``_old_forward``: patch under them."""
    return "_old_forward" if hasattr(module, "_hf_hook") and "_old_forward" in module.__dict__ else "forward"


class _Installed:
    """One replaced forward, and how to undo it."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]) -> None:
        self.module, self.slot, self.fn = module, _forward_slot(module), fn
        self.saved = module.__dict__.get(self.slot, _MISSING)

    def install(self) -> None:
        setattr(self.module, self.slot, self.fn)

    def undo(self) -> None:
        if self.saved is _MISSING:  # (also where install never ran)
            self.module.__dict__.pop(self.slot, None)
        else:
            setattr(self.module, self.slot, self.saved)


def _experts_order(experts: nn.Module) -> str:
    """Mirror the arithmetic order of the back-end the model was configured with."""
    impl = getattr(getattr(experts, "config", None), "_experts_implementation", None)
    return "expert" if impl == "eager" else "slot"


def _c_thresholds(layer: MoELayer, policy: Policy) -> torch.Tensor | None:
    """The policy's rank thresholds [K] where the routing step can run in C (``adaptk.routing.fused``):
    the family ranks experts by their softmax probabilities and weights them by those
    (``RenormalisedTopK``), the policy is a step function of the entropy, the router is on the
    CPU and the C file compiles; None where not (the torch ops then route)."""
    family, router = layer.family, layer.router
    if (not isinstance(family.weights, RenormalisedTopK) or not family.sorted_topk or family.candidates is not None
            or router.weight.device.type != "cpu"):
        return None
    tau = policy.rank_thresholds(layer.index, layer.native_k, router.weight.device)
    if tau is None or tau.numel() > fused.MAX_K:
        return None
    why = fused.unavailable()
    if why is not None:
        log.info("adaptk: routing with torch ops (the C routing step is unavailable: %s)", why)
        return None
    return tau


def _fused_step(layer: MoELayer, tau: torch.Tensor | None, check: str) -> Callable[..., Any] | None:
    """The routing step after the model's own scores as one C call (``fused.route_topk``) for
    the rank thresholds ``tau`` of ``_c_thresholds``, or None where it cannot run (tau None).
    The returned function gives (selection, weights), or None for a call the torch ops must
    route (a NaN/Inf logit: the torch path then raises or counts as it does; rows that tie take
    torch.topk's order, see ``fused.route_topk``): the same bits as the torch ops either way."""
    if tau is None:
        return None
    spec = layer.family.weights
    k, renorm = tau.numel(), spec.renormalises(layer.router)
    check_logits = check == "eager"

    def step(scores, hidden_dtype: torch.dtype):
        probs, logits = scores.probs, scores.logits
        if scores.rank is not probs or not fused.eligible(probs, logits, k):
            return None
        out = fused.route_topk(probs, entropy_nats(probs), tau, logits if check_logits else None,
                               renormalise=renorm and k <= 2)
        if out.status != fused.OK:
            return None
        w = out.weights
        if renorm and k > 2:  # torch's own sum, as RenormalisedTopK: same bits
            w = w / w.sum(dim=-1, keepdim=True)
        return out.selection, spec.cast(w, logits.dtype, hidden_dtype)

    return step


def _fused_router(layer: MoELayer, tau: torch.Tensor | None, stats: LayerStats | None) -> Callable[..., Any] | None:
    """The whole default router call (the model's linear layer and softmax, the entropy, the C
    step, the statistics' counts) in C++ (``fused.fused_router``: the torch ops' bits), or None
    where it cannot run (tau None, as ``_fused_step``; a family whose scores are not a linear
    softmax; no C++ extension: then ``_fused_step`` after the model's scores). The returned
    function takes (hidden, router weight) and gives the router's (logits, weights, indices), or
    None for a call the torch ops must route (nothing counted; a NaN/Inf logit among them, which
    the torch path raises (the eager check) or counts (the deferred one))."""
    if tau is None or not layer.family.linear_softmax:
        return None
    family, spec = layer.family, layer.family.weights
    return fused.fused_router(tau, spec.renormalises(layer.router), spec.out, flatten=family.flattens_hidden,
                              stats=stats)


def _native_router(layer: MoELayer, tau: torch.Tensor | None, stats: LayerStats | None) -> Callable[..., Any] | None:
    """The whole router (linear layer, softmax, entropy, routing step, the statistics' counts) as
    one C call (``fused.NativeRouter``) for a family whose scores are a linear softmax, or None
    where it cannot run (tau None, as ``_fused_step``). The returned function takes (hidden,
    router weight) and gives the router's (logits, weights, indices), or None for a call the
    other paths must route (more than 16 tokens, autograd, a dtype or layout it does not take, a
    NaN/Inf logit: then nothing has been counted)."""
    if tau is None or not layer.family.linear_softmax:
        return None
    router, spec = layer.router, layer.family.weights
    # for these families the logits are in the hidden dtype: "logits" and "hidden" weights alike
    native = fused.NativeRouter(tau, spec.renormalises(router), weights_as_input=spec.out != "float32",
                                stats=stats, selection=False, flatten=layer.family.flattens_hidden)
    return native.route


def _check_finite(logits: torch.Tensor, index: int, name: str) -> None:
    """The eager NaN/Inf check: one reduction and one host read; the per-token count only on failure."""
    total = logits.sum() if logits.dtype == torch.float32 else logits.sum(dtype=torch.float32)
    if not math.isfinite(total.item()):
        bad = ~torch.isfinite(logits).all(dim=-1)  # [T]
        if bool(bad.any()):
            raise RoutingInputError(
                f"MoE layer {index} ({name}): router logits hold NaN or Inf for {int(bad.sum())} of "
                f"{bad.shape[0]} tokens; adaptk will not route them. Check the weights and inputs "
                "(fp16 overflow is a common cause: try bfloat16 or float32)."
            )


def _routed_forward(layer: MoELayer, policy: Policy, stats: LayerStats | None, check: str,
                    routing: str = "fused") -> Callable[..., Any]:
    router, family = layer.router, layer.family
    native_k, index, name = layer.native_k, layer.index, layer.name
    tau = _c_thresholds(layer, policy) if routing != "torch" else None
    whole = _native_router(layer, tau, stats) if routing == "native" else None
    cxx = _fused_router(layer, tau, stats)
    # the C++ routers, tried in turn; a call they decline goes to ``scored``: the model's scores,
    # then the C step through ctypes (only where the C++ fused router cannot build) or the torch ops
    routes = [r for r in (whole, cxx) if r is not None]
    step = _fused_step(layer, tau, check) if cxx is None else None

    def scored(hidden_states: torch.Tensor):
        """The model's own scores, then the fused step or the torch ops (same bits): (logits, selection, weights)."""
        scores = family.scores(router, hidden_states)
        done = step(scores, hidden_states.dtype) if step is not None else None
        if done is not None:
            return scores.logits, *done
        if check == "eager":
            _check_finite(scores.logits, index, name)
        sel = decide(policy, scores.probs, scores.rank, layer=index, native_k=native_k,
                     sorted_topk=family.sorted_topk, candidates=family.candidates)
        return scores.logits, sel, family.weights(router, scores, sel, hidden_states.dtype)

    def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        for route in routes:  # each counts its tokens in the statistics; the weight read per call (moved, cast)
            done = route(hidden_states, router.weight)
            if done is not None:
                return done
        logits, sel, weights = scored(hidden_states)
        if stats is not None:  # deferred: the logits' NaN/Inf tokens are counted on the device at the fold
            stats.update(sel.entropy, sel.candidates, sel.drop, logits if check == "deferred" else None)
        return logits, weights, sel.indices

    return forward


class PatchHandle:
    """What ``patch`` returns: a context manager whose exit (or ``unpatch()``) restores the model.

    All or nothing: every layer's kernel is checked and every replacement forward built before
    any is installed, and a failure while installing undoes what was installed (and the
    model's mark) before it propagates, so a patch that raises leaves the model as it was."""

    def __init__(self, model: nn.Module, policy: Policy, layers: list[MoELayer], check: str,
                 kernel: str = "exact", collect_stats: bool = True, routing: str = "fused") -> None:
        self.model, self.policy, self.layers, self.kernel = model, policy, layers, kernel
        self.collect_stats = collect_stats
        self._stats: list[LayerStats] = []
        self._installed: list[_Installed] = []
        self.kernels: list = []  # one matmul kernel per experts module (holding packed weights, if any)
        check_kernel_name(kernel)
        for layer in layers:  # every layer's eligibility (device, dtype) before anything is built
            try:
                check_kernel(layer.experts, kernel)
            except KernelError as err:
                raise KernelError(f"MoE layer {layer.index} ({layer.name}): {err}") from None
        replacements: list[tuple[nn.Module, Callable[..., Any]]] = []
        for layer in layers:
            device = layer.router.weight.device
            stats = LayerStats(layer.index, layer.name, layer.num_experts, layer.native_k,
                               policy.kmax(layer.native_k), device)
            self._stats.append(stats)
            replacements.append((
                layer.router, _routed_forward(layer, policy, stats if collect_stats else None, check, routing)))
            order = _experts_order(layer.experts)
            matmul = kernel_for(layer.experts, kernel, order)
            self.kernels.append(matmul)
            replacements.append(
                (layer.experts, bind_experts(layer.experts, order, stats.add_rows if collect_stats else None, matmul))
            )
        self._install(replacements)

    def _install(self, replacements: list[tuple[nn.Module, Callable[..., Any]]]) -> None:
        """Install every replacement forward and mark the model; on any failure undo them all first."""
        try:
            for module, fn in replacements:
                inst = _Installed(module, fn)
                self._installed.append(inst)  # recorded first: undone even if install fails half way
                inst.install()
            setattr(self.model, _MARK, self)
        except BaseException:
            self._undo()
            raise

    def _undo(self) -> None:
        """Put back every replaced forward, last first, and remove the model's mark if it is ours."""
        for inst in reversed(self._installed):
            inst.undo()
        self._installed = []
        if self.model.__dict__.get(_MARK) is self:
            delattr(self.model, _MARK)

    @property
    def active(self) -> bool:
        return getattr(self.model, _MARK, None) is self

    def stats(self) -> PatchReport:
        """Per-layer statistics since the patch or the last ``reset_stats()``."""
        if not self.collect_stats:
            raise PatchError("this patch was made with collect_stats=False, so it kept no statistics; "
                             "patch with collect_stats=True (the default) or attach adaptk.monitor.RoutingMonitor")
        return PatchReport([s.report() for s in self._stats])

    def reset_stats(self) -> None:
        for s in self._stats:
            s.reset()

    def unpatch(self) -> None:
        """Restore every replaced forward; the model computes exactly as before the patch."""
        if not self.active:
            raise PatchError("this patch is not in place (already unpatched?)")
        self._undo()

    def __enter__(self) -> PatchHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self.unpatch()


def patch(model: nn.Module, policy: Policy, *, check_finite: str = "auto", kernel: str = "exact",
          collect_stats: bool = True, routing: str = "fused") -> PatchHandle:
    """Route every MoE layer of ``model`` through ``policy``; returns a ``PatchHandle``.

    ``check_finite``: "eager" raises ``RoutingInputError`` at once on NaN/Inf router logits (one
    host sync per layer); "deferred" only counts such tokens in ``stats()`` (no sync, for
    accelerators); "auto" is eager on CPU and deferred elsewhere.

    ``kernel`` picks what multiplies each expert's rows (``adaptk.experts.kernels.KERNELS``):
    "exact" (default) reproduces the unpatched model bit for bit when nothing is dropped;
    "native" (adaptk's small-row GEMM, compiled on first use; float32 and bfloat16), "onednn" and
    "onednn-packed" are faster CPU inference kernels (not bit-identical; "native" and
    "onednn-packed" hold a second copy of the expert weights). ``KernelError`` if the chosen
    kernel cannot run on this model (device, dtype, torch build, no C compiler).

    ``collect_stats=False`` skips the per-layer statistics (entropy moments, k histogram, expert
    counts, executed rows; a few microseconds per layer call), for serving;
    ``stats()`` then raises ``PatchError``, and NaN/Inf tokens are not counted in deferred mode.

    ``routing`` picks how each router call runs on the CPU for softmax top-k families (Mixtral,
    Qwen-MoE, OLMoE, Jamba, ...) under a policy whose k is a step function of the entropy
    (``FixedTopK``, ``EntropyThreshold``); other families, policies, devices and autograd always
    use the torch ops. "fused" (default): the model's own linear layer and softmax, then the rest
    of the routing step as one C call (``adaptk.routing.fused``: the same bits as the torch ops,
    which it hands back any call it cannot promise them for), the whole call bound in C++ where
    the extension builds (``adaptk.routing.binding``, compiled on first use; else through Python
    and ctypes). "native": for calls of up to 16
    tokens (decode steps), the whole router, linear layer, softmax and statistics included, as
    one C call, for inference: logits within float32 rounding of the model's, not bit for bit,
    like ``kernel="native"``, called through a torch C++ extension compiled on first use
    (``adaptk.routing.binding``; ctypes where it cannot build); right after a layer call at one
    token it takes about 0.4 of the fused router's time and a third of the model's own router's
    (the fused router itself takes somewhat less than the model's own: docs/performance.md);
    longer calls take the fused router. "torch": the torch ops only.
    """
    if not isinstance(policy, Policy):
        raise TypeError(
            f"policy must be an adaptk policy (FixedTopK, EntropyThreshold, TopP, RatioSkip, ...), "
            f"got {type(policy).__name__}"
        )
    if routing not in ROUTING_MODES:
        raise ValueError(f"routing must be one of {ROUTING_MODES}, got {routing!r}")
    if check_finite not in CHECK_MODES:
        raise ValueError(f"check_finite must be one of {CHECK_MODES}, got {check_finite!r}")
    if getattr(model, _MARK, None) is not None:
        raise PatchError("this model is already patched by adaptk; unpatch() it first")
    layers = find_moe_layers(model)
    for layer in layers:
        policy.validate_for(len(layers), layer.num_experts, layer.native_k)
    if check_finite == "auto":
        on_cpu = all(layer.router.weight.device.type == "cpu" for layer in layers)
        check_finite = "eager" if on_cpu else "deferred"
    if model.training:
        log.warning("adaptk routes deterministically; the router's training-time noise/sampling is not applied")
    register_with_transformers()
    return PatchHandle(model, policy, layers, check_finite, kernel, collect_stats, routing)

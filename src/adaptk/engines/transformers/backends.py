"""The router back-ends by their public names (``patch(..., routing=NAME)``), one declaration each.

A back-end builds, for one MoE layer, a whole-call router (hidden, router weight) -> (logits,
weights, indices) or None for a call it declines, and/or a routing step run after the model's
own scores. A layer's router tries the back-ends of its chain in turn (``falls_back_to``); the
torch ops end every chain. Back-ends read only the family's declared ``FastPath``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from adaptk.errors import PatchConfigError
from adaptk.models.registry import MoELayer
from adaptk.models.spec import FastPath
from adaptk.routing import fused
from adaptk.routing.entropy import entropy_nats
from adaptk.routing.policies import Policy
from adaptk.routing.stats import LayerStats

log = logging.getLogger(__name__)
Route = Callable[[torch.Tensor, torch.Tensor], Any]
Step = Callable[[Any, torch.dtype], Any]


@dataclass(frozen=True)
class Layer:
    """What a back-end builds from: one layer, its fast path, the policy's rank thresholds tau [K]."""

    layer: MoELayer
    fast: FastPath
    tau: torch.Tensor
    stats: LayerStats | None
    check: str


@dataclass(frozen=True)
class Built:
    route: Route | None = None  # the whole router call, or None
    step: Step | None = None  # the step after the model's scores, or None


@dataclass(frozen=True)
class Backend:
    name: str
    summary: str
    falls_back_to: str | None  # the back-end a call it cannot build or declines goes to
    build: Callable[[Layer], Built] | None = None  # None: the torch ops only


def _step(ctx: Layer) -> Step:
    """The routing step after the model's scores as one C call (``fused.route_topk``). It gives
    (selection, weights), or None for a call the torch ops must route (a NaN/Inf logit, a tie:
    see ``fused.route_topk``): the torch ops' bits either way."""
    fast, tau = ctx.fast, ctx.tau
    k, renorm = tau.numel(), fast.renormalises(ctx.layer.router)
    check_logits = ctx.check == "eager"

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
        return out.selection, fast.cast(w, logits.dtype, hidden_dtype)

    return step


def _build_fused(ctx: Layer) -> Built:
    """The whole router call in C++ (``fused.fused_router``, the torch ops' bits) for a linear
    softmax; else (or where the extension cannot build) the C step after the model's scores."""
    fast = ctx.fast
    route = None
    if fast.linear_softmax:
        route = fused.fused_router(ctx.tau, fast.renormalises(ctx.layer.router), fast.out,
                                   flatten=fast.flattens_hidden, stats=ctx.stats)
    return Built(route=route) if route is not None else Built(step=_step(ctx))


def _build_native(ctx: Layer) -> Built:
    """The whole router (linear layer, softmax, entropy, step, counts) as one C call
    (``fused.NativeRouter``) for a linear softmax; it declines calls of more than 16 tokens,
    autograd, dtypes or layouts it does not take, and NaN/Inf logits."""
    fast = ctx.fast
    if not fast.linear_softmax:
        return Built()
    # for these families the logits are in the hidden dtype: "logits" and "hidden" weights alike
    native = fused.NativeRouter(ctx.tau, fast.renormalises(ctx.layer.router), weights_as_input=fast.out != "float32",
                                stats=ctx.stats, selection=False, flatten=fast.flattens_hidden)
    return Built(route=native.route)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "the torch ops only", None),
    Backend("fused", "the model's linear layer and softmax, the rest as one C call: the torch ops' bits",
            "torch", _build_fused),
    Backend("native", "decode steps' whole router as one C call, within float32 rounding", "fused", _build_native),
)}
ROUTING_MODES = tuple(BACKENDS)


def backend(name: str) -> Backend:
    """The back-end registered as ``name``; ``PatchConfigError`` naming them all if none is."""
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise PatchConfigError(f"routing must be one of {ROUTING_MODES}, got {name!r}") from None


def chain(name: str) -> list[Backend]:
    """The back-ends a call under ``routing=name`` tries, in order (the torch ops last)."""
    out, nxt = [], name
    while nxt is not None:
        out.append(backend(nxt))
        nxt = out[-1].falls_back_to
    return out


def _context(layer: MoELayer, policy: Policy, stats: LayerStats | None, check: str) -> Layer | None:
    """The layer as the C back-ends take it, or None where they cannot run: no fast path, a
    router off the CPU, a policy that is not a step function of the entropy, no C compiler."""
    fast, router = layer.family.fast_path, layer.router
    if fast is None or router.weight.device.type != "cpu":
        return None
    tau = policy.rank_thresholds(layer.index, layer.native_k, router.weight.device)
    if tau is None or tau.numel() > fused.MAX_K:
        return None
    why = fused.unavailable()
    if why is not None:
        log.info("adaptk: routing with torch ops (the C routing step is unavailable: %s)", why)
        return None
    return Layer(layer, fast, tau, stats, check)


def build(layer: MoELayer, policy: Policy, stats: LayerStats | None, check: str,
          routing: str) -> tuple[list[Route], Step | None]:
    """The whole-call routers a call of ``layer`` tries in turn, and the step after the model's
    scores (None: the torch ops), along the chain of ``routing``."""
    builders = [b.build for b in chain(routing) if b.build is not None]
    ctx = _context(layer, policy, stats, check) if builders else None
    routes, step = [], None
    if ctx is None:
        return routes, step
    for make in builders:
        built = make(ctx)
        if built.route is not None:
            routes.append(built.route)
        step = step or built.step
    return routes, step

"""``adaptk.patch(model, policy)``: route every MoE layer of one model instance through a policy.

Only the instance handed in changes: each MoE layer's router and experts module gets an
instance-level ``forward`` (under an accelerate device hook, its ``_old_forward``), and
``unpatch()`` puts back exactly what was there. Nothing is patched at import. Details:
docs/patch.md.
"""

from __future__ import annotations

import logging

from torch import nn

from adaptk.engines.transformers.backends import backend
from adaptk.engines.transformers.handle import PatchHandle
from adaptk.engines.transformers.install import MARK
from adaptk.errors import PatchConfigError, PatchError
from adaptk.experts.variable_k import register_with_transformers
from adaptk.models.registry import find_moe_layers
from adaptk.routing.policies import Policy

log = logging.getLogger(__name__)
CHECK_MODES = ("auto", "eager", "deferred")


def patch(model: nn.Module, policy: Policy, *, check_finite: str = "auto", kernel: str = "exact",
          collect_stats: bool = True, routing: str = "fused") -> PatchHandle:
    """Route every MoE layer of ``model`` through ``policy``; returns a ``PatchHandle``.

    ``check_finite``: "eager" raises ``RoutingInputError`` on NaN/Inf router logits, "deferred"
    counts them in ``stats()`` (no host sync), "auto" is eager on CPU, deferred elsewhere.
    ``kernel``: what multiplies each expert's rows (``adaptk.experts.kernels.KERNELS``); "exact"
    (default) keeps the unpatched model's bits; ``KernelError`` where it cannot run.
    ``collect_stats=False``: no per-layer statistics (``stats()`` raises ``PatchError``).
    ``routing``: the router back-end by name (``adaptk.engines.transformers.BACKENDS``): "fused"
    (default, the torch ops' bits), "native" (decode steps in C, within float32 rounding) or
    "torch". Invalid option values raise ``PatchConfigError``. See docs/patch.md.
    """
    if not isinstance(policy, Policy):
        raise TypeError(
            f"policy must be an adaptk policy (FixedTopK, EntropyThreshold, TopP, RatioSkip, ...), "
            f"got {type(policy).__name__}"
        )
    backend(routing)  # PatchConfigError naming the back-ends
    if check_finite not in CHECK_MODES:
        raise PatchConfigError(f"check_finite must be one of {CHECK_MODES}, got {check_finite!r}")
    if getattr(model, MARK, None) is not None:
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

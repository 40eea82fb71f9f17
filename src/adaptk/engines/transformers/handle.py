"""``PatchHandle``: what ``patch`` returns; builds every layer's forwards, installs them all or
nothing, and restores the model on exit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from adaptk.engines.transformers.forward import routed_forward
from adaptk.engines.transformers.install import MARK, _Installed, install_all, undo_all
from adaptk.errors import KernelError, PatchError
from adaptk.experts.kernels import check_kernel, check_kernel_name, kernel_for
from adaptk.experts.variable_k import bind as bind_experts
from adaptk.models.registry import MoELayer
from adaptk.routing.policies import Policy
from adaptk.routing.stats import LayerStats, PatchReport


def _experts_order(experts: nn.Module) -> str:
    """Mirror the arithmetic order of the back-end the model was configured with."""
    impl = getattr(getattr(experts, "config", None), "_experts_implementation", None)
    return "expert" if impl == "eager" else "slot"


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
                layer.router, routed_forward(layer, policy, stats if collect_stats else None, check, routing)))
            order = _experts_order(layer.experts)
            matmul = kernel_for(layer.experts, kernel, order)
            self.kernels.append(matmul)
            replacements.append(
                (layer.experts, bind_experts(layer.experts, order, stats.add_rows if collect_stats else None, matmul))
            )
        install_all(self.model, self, replacements, self._installed)

    @property
    def active(self) -> bool:
        return getattr(self.model, MARK, None) is self

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
        undo_all(self.model, self, self._installed)

    def __enter__(self) -> PatchHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self.unpatch()

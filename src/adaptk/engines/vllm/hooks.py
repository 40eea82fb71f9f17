"""The seams in vLLM (0.32) the plugin uses; the only module of adaptk that imports vLLM.

1. ``FusedMoEFactory`` (what vLLM's MoE models call to build a layer, with its ``prefix``) is
   wrapped, in its package and in model modules already imported, so that every MoE layer gets
   ``custom_routing_function=LayerRouter``: vLLM's router calls it with the router logits and
   the native top-k, and it returns the policy's weights and ids (``route``). The first layer
   built checks the policy file against the served model (``served``) and fails the start with
   adaptk's message where it does not fit.
2. On the CPU, the experts kernel ``cpu_fused_moe`` (as ``experts.cpu_moe`` calls it) is wrapped
   so that the kept pairs only reach it (``pairs.run_kept``) and the rows it receives are counted.
   On other platforms the routing is the same and dropped slots carry id -1, which vLLM's GPU
   kernels skip in ``moe_align`` (not run here); the kept slots are counted as executed.

Tensor parallel ranks route the same tokens: only TP rank 0 publishes metrics.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import sys
import threading
from typing import Any

import torch

from adaptk.calibrate import PolicyFile, load_policy_file
from adaptk.counting import count_ids
from adaptk.engines.vllm import served
from adaptk.engines.vllm.config import ENV_POLICY, ServingConfig
from adaptk.engines.vllm.metrics import LayerMonitor, Metrics
from adaptk.engines.vllm.pairs import run_kept
from adaptk.engines.vllm.route import route
from adaptk.errors import UnsupportedModelError
from adaptk.routing.policies import Policy

log = logging.getLogger(__name__)
_CURRENT = threading.local()  # .monitor: the layer whose routing the next experts call executes


class LayerRouter:
    """vLLM's ``custom_routing_function`` for one MoE layer."""

    def __init__(self, policy: Policy | None, monitor: LayerMonitor, count_kept: bool) -> None:
        self.policy, self.monitor, self.count_kept = policy, monitor, count_kept

    def __call__(self, hidden_states: torch.Tensor, gating_output: torch.Tensor, topk: int,
                 renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.monitor
        r = route(self.policy, gating_output, layer=m.index, native_k=topk, renormalize=renormalize)
        m.record(r.selection, gating_output)
        if self.count_kept:  # no kernel of ours counts: the kept slots are what the kernel runs
            m.add_rows(count_ids(r.selection.indices, m.num_experts))
        else:
            _CURRENT.monitor = m
        return r.weights, r.ids


class _State:
    """The process's plugin state: its configuration, policy file and layers."""

    def __init__(self, cfg: ServingConfig, pf: PolicyFile | None) -> None:
        self.cfg, self.pf = cfg, pf
        self.policy = pf.build_policy() if pf is not None else None
        self.monitors: dict[str, LayerMonitor] = {}
        self._layers: dict[int, served.ServedLayer] | None = None
        self._metrics: Metrics | None = None

    def layers(self) -> dict[int, served.ServedLayer]:
        if self._layers is None:
            from vllm.config import get_current_vllm_config

            hf_config = get_current_vllm_config().model_config.hf_config
            model = served.meta_model(hf_config)
            if self.pf is not None:
                served.check_policy_file(self.pf, model, f"{ENV_POLICY}={self.cfg.policy_path}")
            self._layers = served.served_layers(model)
        return self._layers

    def router(self, prefix: str, num_experts: int, top_k: int, count_kept: bool) -> LayerRouter:
        layer = self.layers().get(served.decoder_layer(prefix))
        if layer is None or (layer.num_experts, layer.native_k) != (num_experts, top_k):
            raise UnsupportedModelError(
                f"vLLM's MoE layer {prefix!r} ({num_experts} experts, top-{top_k}) matches no MoE layer of the "
                f"model's transformers architecture ({sorted(self.layers())} by decoder layer); adaptk cannot "
                "route this model in vLLM")
        monitor = LayerMonitor(layer.index, prefix, num_experts, top_k,
                               self.policy.kmax(top_k) if self.policy else top_k,
                               self.metrics() if _tp_rank() == 0 else None, self.cfg.interval)
        monitor.declare()
        self.monitors[prefix] = monitor
        return LayerRouter(self.policy, monitor, count_kept)

    def metrics(self) -> Metrics:
        if self._metrics is None:
            self._metrics = Metrics()
        return self._metrics

    def publish_all(self) -> None:
        for monitor in self.monitors.values():
            monitor.publish()


_STATE: _State | None = None
_UNSUPPORTED = {"use_grouped_topk": False, "scoring_func": "softmax", "e_score_correction_bias": None,
                "custom_routing_function": None, "router": None, "zero_expert_type": None,
                "hash_indices_table": None}


def state() -> _State | None:
    """The installed plugin state of this process (None: not installed)."""
    return _STATE


def _tp_rank() -> int:
    try:
        from vllm.distributed import get_tensor_model_parallel_rank

        return get_tensor_model_parallel_rank()
    except (AssertionError, RuntimeError, ImportError):  # no parallel state: one process
        return 0


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _wrap_factory(original):
    sig = inspect.signature(original)

    @functools.wraps(original)
    def factory(*args: Any, **kwargs: Any):
        bound = sig.bind(*args, **kwargs)
        given = bound.arguments
        prefix = given.get("prefix", "")
        for name, native in _UNSUPPORTED.items():
            value = given.get(name, native)
            if value is not native and (native is None or value != native):  # None: any value is unsupported
                raise UnsupportedModelError(f"vLLM's MoE layer {prefix!r} sets {name}={given[name]!r}: adaptk's "
                                            "vLLM plugin routes softmax top-k layers only")
        assert _STATE is not None
        if _STATE.policy is not None and given.get("quant_config") is not None and _on_cpu():
            raise UnsupportedModelError(f"vLLM's MoE layer {prefix!r} is quantized: adaptk runs the kept pairs only "
                                        "through vLLM's unquantized CPU experts; serve an unquantized checkpoint, "
                                        "or use ADAPTK_MONITOR=1 alone")
        # the unquantized CPU experts count their rows (our kernel wrapper); elsewhere the kept slots
        # are what the kernel runs (monitor only: all of them)
        ours = _on_cpu() and given.get("quant_config") is None
        given["custom_routing_function"] = _STATE.router(prefix, given["num_experts"], given["top_k"],
                                                         count_kept=not ours)
        return original(*bound.args, **bound.kwargs)

    factory.__adaptk_original__ = original
    return factory


def _wrap_kernel(original):
    @functools.wraps(original)
    def cpu_fused_moe(out, input, w13, w2, w13_bias, w2_bias, topk_weights, topk_ids, act, isa,
                      skip_weighted=False):
        monitor, _CURRENT.monitor = getattr(_CURRENT, "monitor", None), None
        if monitor is None:  # a layer adaptk does not route
            return original(out, input, w13, w2, w13_bias, w2_bias, topk_weights, topk_ids, act, isa, skip_weighted)

        def kernel(x, w, ids):
            if x is input:  # the call as it came (nothing dropped)
                original(out, x, w13, w2, w13_bias, w2_bias, w, ids, act, isa, skip_weighted)
                return out
            rows = x.new_empty((x.shape[0], out.shape[1]))
            original(rows, x, w13, w2, w13_bias, w2_bias, w.contiguous(), ids.contiguous(), act, isa, skip_weighted)
            return rows

        done = run_kept(kernel, input, topk_weights, topk_ids, monitor.num_experts)
        if done.out is not out:
            out.copy_(done.out)
        monitor.add_rows(done.rows)

    cpu_fused_moe.__adaptk_original__ = original
    return cpu_fused_moe


def install(cfg: ServingConfig) -> None:
    """Install the seams in this process, once (vLLM may load plugins more than once)."""
    global _STATE
    if _STATE is not None:
        return
    pf = load_policy_file(cfg.policy_path) if cfg.policy_path is not None else None  # format: fails here
    import vllm.model_executor.layers.fused_moe as fused_moe

    _STATE = _State(cfg, pf)
    original = fused_moe.FusedMoEFactory
    wrapped = _wrap_factory(original)
    for name, module in list(sys.modules.items()):  # the package and models imported before the plugin
        # vars(), not getattr: a lazy module (transformers') would import on attribute access
        if name.startswith("vllm.") and vars(module).get("FusedMoEFactory") is original:
            module.FusedMoEFactory = wrapped
    try:
        from vllm.model_executor.layers.fused_moe.experts import cpu_moe
    except ImportError:  # a build without the CPU experts
        log.info("adaptk: vLLM's CPU experts are not importable; routing only")
    else:
        cpu_moe.cpu_fused_moe = _wrap_kernel(cpu_moe.cpu_fused_moe)
    atexit.register(_STATE.publish_all)
    log.info("adaptk: vLLM plugin installed (%s)", "policy " + str(cfg.policy_path) if pf else "monitor only")

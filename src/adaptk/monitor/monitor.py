"""``RoutingMonitor``: routing health of a transformers MoE model, patched by adaptk or not.

One forward hook per MoE router. From the hook's input hidden states it recomputes the full
routing distribution with the family's own arithmetic (``MoEFamily.scores``); from the router's
output ``(logits, weights, indices)`` it takes the experts chosen (index N = a slot adaptk
dropped). Hooks fire whether or not ``adaptk.patch`` replaced the router's ``forward``, so one
monitor serves the native model and the patched one. ``detach()`` removes every hook: the model
computes exactly as before.

API in torchmetrics style: ``update`` / ``compute`` / ``reset`` / ``merge``. Statistics live on
each router's device and are updated in place under a lock (no host sync per layer); windows
close every ``window_tokens`` tokens or on ``step()`` and are kept in a bounded deque.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adaptk.models import MoELayer, find_moe_layers
from adaptk.monitor.alerts import Alert, AlertConfig, evaluate_alerts
from adaptk.monitor.errors import MonitorError
from adaptk.monitor.report import MonitorReport
from adaptk.monitor.state import DEFAULT_BINS, LayerState, LayerSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorConfig:
    bins: int = DEFAULT_BINS  # entropy histogram bins over [0, log N]
    capacity_factor: float = 1.25  # capacity = cf * tokens * k / N per forward batch
    window_tokens: int | None = None  # close a window every this many tokens; None: on step() only
    max_windows: int = 64  # windows kept per layer (oldest dropped)
    max_alerts: int = 1000  # alerts kept in ``alert_log``
    alerts: AlertConfig = field(default_factory=AlertConfig)

    def __post_init__(self) -> None:
        if not (isinstance(self.bins, int) and 2 <= self.bins <= 4096):
            raise ValueError(f"bins must be an integer in [2, 4096], got {self.bins!r}")
        if not self.capacity_factor > 0:
            raise ValueError(f"capacity_factor must be > 0, got {self.capacity_factor}")
        if self.window_tokens is not None and not (isinstance(self.window_tokens, int) and self.window_tokens >= 1):
            raise ValueError(f"window_tokens must be None or an integer >= 1, got {self.window_tokens!r}")
        for name in ("max_windows", "max_alerts"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.alerts, AlertConfig):
            raise ValueError(f"alerts must be an AlertConfig, got {type(self.alerts).__name__}")


def fingerprint(model: nn.Module, layers: list[MoELayer] | None = None) -> dict[str, Any]:
    """What identifies a model's routing layout: architecture, MoE layers, N and native k each."""
    layers = layers if layers is not None else find_moe_layers(model)
    archs = getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__]
    return {
        "architecture": type(model).__name__ if type(model).__name__ in archs else archs[0],
        "num_moe_layers": len(layers),
        "num_experts": [layer.num_experts for layer in layers],
        "native_k": [layer.native_k for layer in layers],
    }


class _Layer:
    """One layer's running total, open window and closed windows."""

    def __init__(self, index: int, name: str, n: int, k: int, cfg: MonitorConfig, device) -> None:
        self.make = lambda: LayerState(index, name, n, k, bins=cfg.bins,  # noqa: E731
                                       capacity_factor=cfg.capacity_factor, device=device)
        self.total, self.window = self.make(), self.make()
        self.window_index, self.window_seen = 0, 0  # host-side token count of the open window
        self.closed: deque[tuple[int, LayerState]] = deque(maxlen=cfg.max_windows)
        self.alerted_through = -1

    def close_window(self) -> None:
        self.total.merge(self.window)
        self.closed.append((self.window_index, self.window))
        self.window, self.window_seen = self.make(), 0
        self.window_index += 1


class RoutingMonitor:
    """Collects routing statistics of every MoE layer of the model it is attached to."""

    def __init__(self, config: MonitorConfig | None = None, **overrides: Any) -> None:
        if config is not None and overrides:
            raise TypeError("pass either a MonitorConfig or keyword overrides, not both")
        self.config = config or MonitorConfig(**overrides)
        self._lock = threading.Lock()
        self._layers: list[_Layer] = []
        self._layer_defs: list[MoELayer] = []
        self._handles: list[Any] = []
        self.fingerprint: dict[str, Any] | None = None
        self.alert_log: deque[Alert] = deque(maxlen=self.config.max_alerts)

    # ---- attaching ------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self, model: nn.Module) -> RoutingMonitor:
        """Hook every MoE router of ``model``. Statistics of an earlier model are kept only if
        the routing layout is the same (same fingerprint); otherwise they restart."""
        if self.attached:
            raise MonitorError("this monitor is already attached; detach() it first")
        layers = find_moe_layers(model)
        fp = fingerprint(model, layers)
        if fp != self.fingerprint:
            self.fingerprint = fp
            self._layers = [
                _Layer(L.index, L.name, L.num_experts, L.native_k, self.config, L.router.weight.device)
                for L in layers
            ]
        self._layer_defs = layers
        for L in layers:
            self._handles.append(L.router.register_forward_hook(self._hook_for(L), with_kwargs=True))
        log.info("routing monitor attached to %d MoE layers of %s", len(layers), fp["architecture"])
        return self

    def detach(self) -> None:
        """Remove every hook; the model computes exactly as before ``attach``. Stats are kept."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._layer_defs = []

    def __enter__(self) -> RoutingMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _hook_for(self, layer: MoELayer):
        family, router, index, n = layer.family, layer.router, layer.index, layer.num_experts

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states")
            if hidden is None or not isinstance(output, tuple) or len(output) < 3:
                return
            with torch.no_grad():
                probs = family.scores(router, hidden.detach()).probs.reshape(-1, n)  # [T, N] f32
                logits = output[0].detach().reshape(probs.shape[0], -1)  # [T, N]
                valid = torch.isfinite(logits).all(dim=-1) & torch.isfinite(probs).all(dim=-1)  # [T]
                self.update(index, probs, output[2].detach(), valid)

        return hook

    # ---- torchmetrics-style API -------------------------------------------------------------

    def _require_layers(self) -> None:
        if not self._layers:
            raise MonitorError("this monitor has no layers yet: attach(model) it first")

    def update(self, layer: int, probs: torch.Tensor, indices: torch.Tensor,
               valid: torch.Tensor | None = None) -> None:
        """Count one batch of one MoE layer: probs [T, N], indices [T, K] (N = dropped slot),
        valid [T] bool (default: rows of finite probabilities)."""
        self._require_layers()
        if not 0 <= layer < len(self._layers):
            raise MonitorError(f"layer {layer} out of range: this monitor has {len(self._layers)} MoE layers")
        lay = self._layers[layer]
        with self._lock:
            lay.window.update(probs, indices, valid)
            lay.window_seen += probs.reshape(-1, lay.total.num_experts).shape[0]
            wt = self.config.window_tokens
            if wt is not None and lay.window_seen >= wt:
                lay.close_window()

    def step(self) -> None:
        """Close the open window of every layer (call once per training/serving step)."""
        with self._lock:
            for lay in self._layers:
                lay.close_window()

    def compute(self) -> MonitorReport:
        """Statistics of every token seen since attach (or reset), one summary per layer."""
        self._require_layers()
        return MonitorReport([s.compute() for s in self.layer_states()], dict(self.fingerprint or {}))

    def reset(self) -> None:
        """Forget every statistic, window and alert (hooks stay)."""
        with self._lock:
            for lay in self._layers:
                lay.total.reset()
                lay.window.reset()
                lay.window_seen, lay.window_index, lay.alerted_through = 0, 0, -1
                lay.closed.clear()
            self.alert_log.clear()

    def merge(self, other: RoutingMonitor) -> None:
        """Add another monitor's totals (another process, shard or thread) to these. Exact."""
        if other.fingerprint != self.fingerprint:
            raise MonitorError(
                f"cannot merge monitors of different models: {other.fingerprint} vs {self.fingerprint}"
            )
        theirs = other.layer_states()
        with self._lock:
            for lay, st in zip(self._layers, theirs, strict=True):
                lay.total.merge(st)

    def layer_states(self) -> list[LayerState]:
        """Copies of each layer's sufficient statistics (total plus open window)."""
        with self._lock:
            out = []
            for lay in self._layers:
                s = lay.total.clone()
                s.merge(lay.window)
                out.append(s)
        return out

    def state_dict(self) -> dict:
        """JSON-able sufficient statistics, to merge across processes with ``load_state_dict``."""
        return {"fingerprint": self.fingerprint, "layers": [s.state_dict() for s in self.layer_states()]}

    def merge_state_dict(self, data: dict) -> None:
        """Merge ``state_dict()`` output of another monitor of the same model."""
        if data.get("fingerprint") != self.fingerprint:
            raise MonitorError(f"state of another model: {data.get('fingerprint')} vs {self.fingerprint}")
        with self._lock:
            for lay, st in zip(self._layers, data["layers"], strict=True):
                lay.total.merge(LayerState.from_state_dict(st, device=lay.total.device))

    # ---- windows, trends, alerts ------------------------------------------------------------

    def windows(self, layer: int) -> list[tuple[int, LayerSummary]]:
        """The closed windows kept for ``layer``, oldest first: [(window index, summary)]."""
        self._require_layers()
        with self._lock:
            kept = list(self._layers[layer].closed)
        return [(w, s.compute()) for w, s in kept]

    def trends(self, metric: str = "entropy_normalized") -> dict[int, list[tuple[int, float]]]:
        """``metric`` of every kept window, per layer: {layer: [(window, value), ...]}."""
        if metric not in LayerSummary.__dataclass_fields__:
            raise MonitorError(f"unknown metric {metric!r}; one of {sorted(LayerSummary.__dataclass_fields__)}")
        return {i: [(w, getattr(s, metric)) for w, s in self.windows(i)] for i in range(len(self._layers))}

    def check_alerts(self) -> list[Alert]:
        """Judge the windows closed since the last call; alerts are logged, kept and returned."""
        self._require_layers()
        out: list[Alert] = []
        for i, lay in enumerate(self._layers):
            wins = self.windows(i)
            out += evaluate_alerts(wins, self.config.alerts, since=lay.alerted_through)
            if wins:
                lay.alerted_through = wins[-1][0]
        self.alert_log.extend(out)
        return out

    def __iter__(self) -> Iterator[LayerSummary]:
        return iter(self.compute().layers)

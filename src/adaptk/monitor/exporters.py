"""Where monitor statistics go: JSONL files, Prometheus, TensorBoard (each optional).

Prometheus metrics (all labelled ``layer``; ``expert`` only when N <= ``max_expert_labels``):

- ``adaptk_routing_tokens_total`` / ``adaptk_routing_nonfinite_tokens_total`` (counters)
- ``adaptk_routing_entropy_nats`` (gauge, mean) and ``adaptk_routing_token_entropy_nats``
  (histogram of per-token entropy, buckets = the monitor's fixed bins)
- ``adaptk_routing_entropy_normalized``, ``adaptk_routing_average_k``, ``adaptk_routing_load_cv``,
  ``adaptk_routing_load_max_over_mean``, ``adaptk_routing_load_gini``,
  ``adaptk_routing_dead_expert_fraction``, ``adaptk_routing_effective_experts``,
  ``adaptk_routing_mutual_information_nats``, ``adaptk_routing_overflow_ratio`` (gauges)
- ``adaptk_routing_expert_assignments_total`` (counter, labels layer and expert)
- ``adaptk_routing_alerts_total`` (counter, labels layer and rule)
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from adaptk.monitor.monitor import RoutingMonitor

log = logging.getLogger(__name__)

GAUGES: dict[str, tuple[str, str]] = {
    # summary field -> (metric name, help)
    "entropy_mean": ("adaptk_routing_entropy_nats", "Mean routing entropy per token (nats)"),
    "entropy_normalized": ("adaptk_routing_entropy_normalized", "Mean routing entropy / log N"),
    "average_k": ("adaptk_routing_average_k", "Average experts kept per token"),
    "load_cv": ("adaptk_routing_load_cv", "Coefficient of variation of expert loads"),
    "max_over_mean": ("adaptk_routing_load_max_over_mean", "Busiest expert load over mean load"),
    "gini": ("adaptk_routing_load_gini", "Gini coefficient of expert loads"),
    "dead_fraction": ("adaptk_routing_dead_expert_fraction", "Fraction of experts with no token"),
    "effective_experts": ("adaptk_routing_effective_experts", "exp(entropy of the load distribution)"),
    "mutual_information": ("adaptk_routing_mutual_information_nats", "Mutual information token/expert (nats)"),
    "overflow_rate": ("adaptk_routing_overflow_ratio", "Assignments over expert capacity / assignments"),
}


class JsonlExporter:
    """Appends one JSON line per ``write()``: time, step and every layer summary."""

    def __init__(self, monitor: RoutingMonitor, path: str | Path) -> None:
        self.monitor, self.path = monitor, Path(path)

    def write(self, step: int | None = None, **extra: Any) -> dict:
        report = self.monitor.compute()
        record = {"time": time.time(), "step": step, **extra, **report.to_dict()}
        with self.path.open("a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        return record


def _require_prometheus() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        from adaptk.monitor.errors import MonitorError

        raise MonitorError(
            "the Prometheus exporter needs prometheus_client: pip install 'adaptk[monitor]'"
        ) from exc


class PrometheusCollector:
    """A ``prometheus_client`` collector that reads the monitor at scrape time.

    Registers into ``registry`` (a fresh ``CollectorRegistry`` by default, never the global one).
    Expert-level series are exported only for layers with at most ``max_expert_labels`` experts,
    to bound label cardinality.
    """

    def __init__(self, monitor: RoutingMonitor, registry=None, max_expert_labels: int = 64) -> None:
        _require_prometheus()
        from prometheus_client import CollectorRegistry

        if not (isinstance(max_expert_labels, int) and max_expert_labels >= 0):
            raise ValueError(f"max_expert_labels must be an integer >= 0, got {max_expert_labels!r}")
        self.monitor, self.max_expert_labels = monitor, max_expert_labels
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(self)

    def describe(self):
        return []  # metrics depend on the attached model; no eager description

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        try:
            report = self.monitor.compute()
        except Exception as exc:  # a scrape must not crash the server
            log.debug("no routing statistics to export yet: %s", exc)
            return
        tokens = CounterMetricFamily("adaptk_routing_tokens", "Tokens routed (finite router output)", labels=["layer"])
        bad = CounterMetricFamily("adaptk_routing_nonfinite_tokens", "Tokens with NaN/Inf router output",
                                  labels=["layer"])
        gauges = {f: GaugeMetricFamily(name, help_, labels=["layer"]) for f, (name, help_) in GAUGES.items()}
        hist = HistogramMetricFamily("adaptk_routing_token_entropy_nats", "Per-token routing entropy (nats)",
                                     labels=["layer"])
        experts = CounterMetricFamily("adaptk_routing_expert_assignments", "Token-expert assignments",
                                      labels=["layer", "expert"])
        for s in report.layers:
            layer = str(s.layer)
            tokens.add_metric([layer], s.tokens)
            bad.add_metric([layer], s.nonfinite_tokens)
            for f, g in gauges.items():
                g.add_metric([layer], float(getattr(s, f)))
            top = math.log(s.num_experts) if s.num_experts > 1 else 1.0
            nb, cum, buckets = len(s.entropy_histogram), 0, []
            for i, c in enumerate(s.entropy_histogram):
                cum += c
                edge = "+Inf" if i == nb - 1 else repr(top * (i + 1) / nb)
                buckets.append((edge, cum))
            hist.add_metric([layer], buckets, sum_value=s.entropy_mean * s.tokens if s.tokens else 0.0)
            if s.num_experts <= self.max_expert_labels:
                for e, c in enumerate(s.expert_counts):
                    experts.add_metric([layer, str(e)], c)
        yield tokens
        yield bad
        yield from gauges.values()
        yield hist
        yield experts
        alerts = CounterMetricFamily("adaptk_routing_alerts", "Routing alerts raised", labels=["layer", "rule"])
        for (layer, rule), n in sorted(Counter((a.layer, a.rule) for a in list(self.monitor.alert_log)).items()):
            alerts.add_metric([str(layer), rule], n)
        yield alerts

    def exposition(self) -> bytes:
        """The text exposition format of this registry (what /metrics serves)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class TensorBoardExporter:
    """Scalars and histograms per layer into a TensorBoard log dir, when tensorboard is installed;
    otherwise logs once and does nothing (it is an optional extra)."""

    def __init__(self, monitor: RoutingMonitor, log_dir: str | Path) -> None:
        self.monitor, self.writer = monitor, None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: TensorBoard export is off (pip install tensorboard)")
            return
        self.writer = SummaryWriter(str(log_dir))

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def write(self, step: int) -> None:
        if self.writer is None:
            return
        import torch

        for s in self.monitor.compute().layers:
            for f in GAUGES:
                self.writer.add_scalar(f"routing/layer{s.layer}/{f}", float(getattr(s, f)), step)
            counts = torch.tensor(s.expert_counts, dtype=torch.float64)
            self.writer.add_histogram(f"routing/layer{s.layer}/expert_usage",
                                      torch.arange(s.num_experts).repeat_interleave(counts.long()), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

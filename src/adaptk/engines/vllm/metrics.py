"""Routing health of a vLLM server on its own ``/metrics`` (Prometheus).

Every metric is a counter or a histogram, so that values from vLLM's processes add up: a server
started with ``PROMETHEUS_MULTIPROC_DIR`` (``adaptk serve`` sets one) serves, on the API
server's ``/metrics``, the sum over the EngineCore and worker processes that count. Labels are
bounded: ``layer`` (the MoE layer's index), ``kind``, and ``expert`` only for layers of at most
``MAX_EXPERT_LABELS`` experts.

- ``adaptk_expert_token_pairs_total{layer, kind="executed"|"native"}``: the rows that reached the
  expert matmuls, and tokens x native k (what plain vLLM runs); present in monitor-only mode too
- ``adaptk_routing_tokens_total{layer}``, ``adaptk_routing_kept_experts_total{layer}`` (Σ k: the
  average k is their ratio), ``adaptk_routing_nonfinite_tokens_total{layer}`` (NaN/Inf logits)
- ``adaptk_routing_entropy_normalized{layer}``: histogram of H / log N per token
- ``adaptk_routing_expert_assignments_total{layer, expert}``: tokens routed to each expert (an
  expert whose counter stays flat is dead)

Counting stays on the layer's ``LayerStats`` (no Prometheus call per step); ``LayerMonitor``
publishes what was counted since its last publication at most every ``interval`` seconds, and
at once on its first call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from adaptk.counting import count_ids
from adaptk.routing.select import Selection
from adaptk.routing.stats import LayerReport, LayerStats

MAX_EXPERT_LABELS = 256
ENTROPY_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))  # H / log N; +Inf is added


class Metrics:
    """The process's adaptk metrics (create once per process and registry)."""

    def __init__(self, registry=None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        reg = REGISTRY if registry is None else registry
        self.pairs = Counter("adaptk_expert_token_pairs", "Expert-token pairs: executed (rows reaching the expert "
                             "matmuls) and native (tokens x native top-k)", ["layer", "kind"], registry=reg)
        self.tokens = Counter("adaptk_routing_tokens", "Tokens routed", ["layer"], registry=reg)
        self.kept = Counter("adaptk_routing_kept_experts", "Experts kept, summed over tokens (average k = "
                            "this / adaptk_routing_tokens_total)", ["layer"], registry=reg)
        self.nonfinite = Counter("adaptk_routing_nonfinite_tokens", "Tokens whose router logits held NaN or Inf",
                                 ["layer"], registry=reg)
        self.experts = Counter("adaptk_routing_expert_assignments", "Tokens routed to each expert",
                               ["layer", "expert"], registry=reg)
        self.entropy = Histogram("adaptk_routing_entropy_normalized", "Routing entropy per token over log N",
                                 ["layer"], buckets=ENTROPY_BUCKETS, registry=reg)


@dataclass
class _Published:
    tokens: int = 0
    kept: int = 0
    executed: int = 0
    native: int = 0
    nonfinite: int = 0
    experts: tuple[int, ...] = ()


def entropy_bucket_counts(entropy: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Tokens per histogram bucket of H / log N (non-cumulative, the last one +Inf; a NaN
    entropy lands there): entropy [T] -> [len(ENTROPY_BUCKETS) + 1] int64."""
    bounds = torch.tensor(ENTROPY_BUCKETS, dtype=torch.float32, device=entropy.device)
    norm = entropy / math.log(num_experts) if num_experts > 1 else torch.zeros_like(entropy)
    slot = torch.bucketize(norm, bounds, right=False)  # first bound >= value; NaN: past the last
    return count_ids(slot.clamp_max(len(ENTROPY_BUCKETS)), len(ENTROPY_BUCKETS) + 1)


class LayerMonitor:
    """One MoE layer's counters in one process, and their publication to ``Metrics``."""

    def __init__(self, index: int, name: str, num_experts: int, native_k: int, kmax: int,
                 metrics: Metrics | None, interval: float = 1.0) -> None:
        self.index, self.name = index, name
        self.num_experts, self.native_k, self.kmax = num_experts, native_k, kmax
        self.metrics, self.interval = metrics, interval
        self.stats: LayerStats | None = None  # made on the first call, on the logits' device
        self._hist = torch.zeros(len(ENTROPY_BUCKETS) + 1, dtype=torch.long)
        self._hist_sum = 0.0
        self._published = _Published(experts=(0,) * num_experts)
        self._last = -math.inf

    def record(self, sel: Selection, logits: torch.Tensor) -> None:
        """One routing call: entropy, candidates and dropped slots, and the logits (NaN/Inf count)."""
        if self.stats is None:  # normal tensors (vLLM routes in inference mode): readable anywhere
            with torch.inference_mode(False):
                self.stats = LayerStats(self.index, self.name, self.num_experts, self.native_k, self.kmax,
                                        logits.device)
        self.stats.update(sel.entropy, sel.candidates, sel.drop, logits)
        if self.metrics is not None:
            self._hist += entropy_bucket_counts(sel.entropy, self.num_experts).cpu()
            finite = sel.entropy[torch.isfinite(sel.entropy)]
            self._hist_sum += float(finite.sum()) / math.log(self.num_experts) if self.num_experts > 1 else 0.0

    def add_rows(self, rows: torch.Tensor) -> None:
        """rows [N]: what each expert's matmuls received in one call; publishes when due."""
        if self.stats is None:
            return
        self.stats.add_rows(rows)
        now = time.monotonic()
        if self.metrics is not None and now - self._last >= self.interval:
            self._last = now
            self.publish()

    def report(self) -> LayerReport | None:
        if self.stats is None:
            return None
        with torch.inference_mode():  # the pending tensors are vLLM's inference tensors
            return self.stats.compute()

    def publish(self) -> None:
        """Add what was counted since the last publication to the Prometheus metrics."""
        report, m = self.report(), self.metrics
        if report is None or m is None:
            return
        layer, old = str(self.index), self._published
        kept = sum(k * c for k, c in enumerate(report.k_histogram))
        now = _Published(report.tokens, kept, report.executed_pairs, report.native_pairs,
                         report.nonfinite_tokens, tuple(report.expert_counts))
        m.tokens.labels(layer).inc(now.tokens - old.tokens)
        m.kept.labels(layer).inc(now.kept - old.kept)
        m.pairs.labels(layer, "executed").inc(now.executed - old.executed)
        m.pairs.labels(layer, "native").inc(now.native - old.native)
        m.nonfinite.labels(layer).inc(now.nonfinite - old.nonfinite)
        if self.num_experts <= MAX_EXPERT_LABELS:
            for e, (a, b) in enumerate(zip(old.experts, now.experts)):
                if b > a:
                    m.experts.labels(layer, str(e)).inc(b - a)
        self._publish_histogram(layer)
        self._published = now

    def _publish_histogram(self, layer: str) -> None:
        """The entropy histogram's pending bucket counts, added in bulk (``Histogram.observe``
        adds one observation at a time: the same value objects, incremented by counts)."""
        child = self.metrics.entropy.labels(layer)
        for bucket, count in zip(child._buckets, self._hist.tolist()):
            if count:
                bucket.inc(count)
        child._sum.inc(self._hist_sum)
        self._hist.zero_()
        self._hist_sum = 0.0

    def declare(self) -> None:
        """Make the pair counters exist (at 0) before any request: a scrape sees them at once."""
        if self.metrics is not None:
            for kind in ("executed", "native"):
                self.metrics.pairs.labels(str(self.index), kind)
            self.metrics.tokens.labels(str(self.index))

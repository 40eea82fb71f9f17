"""LayerMonitor publishes exactly what LayerStats counted, as Prometheus counters and a histogram."""

import math

import pytest
import torch

prometheus_client = pytest.importorskip("prometheus_client")

from adaptk.engines.vllm.metrics import ENTROPY_BUCKETS, LayerMonitor, Metrics  # noqa: E402
from adaptk.engines.vllm.pairs import DROPPED  # noqa: E402
from adaptk.engines.vllm.route import route  # noqa: E402
from adaptk.routing import EntropyThreshold  # noqa: E402


def _value(reg, name, **labels):
    v = reg.get_sample_value(name, labels)
    return 0.0 if v is None else v


def _calls(monitor, policy, seeds):
    kept = 0
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(16, 8, generator=g) * 3
        r = route(policy, logits, layer=1, native_k=2, renormalize=True)
        monitor.record(r.selection, logits)
        ids = r.ids[r.ids != DROPPED].long()
        kept += ids.numel()
        monitor.add_rows(torch.bincount(ids, minlength=8))
    return kept


def test_published_counters_equal_the_counts():
    reg = prometheus_client.CollectorRegistry()
    policy = EntropyThreshold.from_fractions([1, 2], [0.6], 8)
    monitor = LayerMonitor(1, "model.layers.1.mlp.experts", 8, 2, 2, Metrics(reg), interval=3600)
    monitor.declare()
    assert _value(reg, "adaptk_expert_token_pairs_total", layer="1", kind="executed") == 0.0
    assert reg.get_sample_value("adaptk_expert_token_pairs_total", {"layer": "1", "kind": "native"}) == 0.0
    kept = _calls(monitor, policy, range(3))  # the first call publishes, the rest wait for the interval
    monitor.publish()
    report = monitor.report()
    assert _value(reg, "adaptk_routing_tokens_total", layer="1") == report.tokens == 48
    assert _value(reg, "adaptk_expert_token_pairs_total", layer="1", kind="executed") == kept == report.executed_pairs
    assert _value(reg, "adaptk_expert_token_pairs_total", layer="1", kind="native") == 96
    assert _value(reg, "adaptk_routing_kept_experts_total", layer="1") == kept < 96
    experts = [_value(reg, "adaptk_routing_expert_assignments_total", layer="1", expert=str(e)) for e in range(8)]
    assert experts == [float(c) for c in report.expert_counts]
    monitor.publish()  # nothing new: nothing added twice
    assert _value(reg, "adaptk_routing_tokens_total", layer="1") == 48


def test_entropy_histogram_equals_observing_each_token():
    reg, ref_reg = prometheus_client.CollectorRegistry(), prometheus_client.CollectorRegistry()
    ref = prometheus_client.Histogram("ref", "", buckets=ENTROPY_BUCKETS, registry=ref_reg)
    monitor = LayerMonitor(0, "m", 8, 2, 2, Metrics(reg), interval=3600)
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(32, 8, generator=g) * (seed + 1)
        r = route(None, logits, layer=0, native_k=2, renormalize=True)
        monitor.record(r.selection, logits)
        for h in r.selection.entropy.tolist():
            ref.observe(h / math.log(8))
    monitor.add_rows(torch.zeros(8, dtype=torch.long))
    for le in [*map(str, ENTROPY_BUCKETS), "+Inf"]:
        ours = reg.get_sample_value("adaptk_routing_entropy_normalized_bucket", {"layer": "0", "le": le})
        assert ours == ref_reg.get_sample_value("ref_bucket", {"le": le}), le
    assert reg.get_sample_value("adaptk_routing_entropy_normalized_sum", {"layer": "0"}) == pytest.approx(
        ref_reg.get_sample_value("ref_sum"), rel=1e-5)


def test_nonfinite_logits_are_counted():
    reg = prometheus_client.CollectorRegistry()
    monitor = LayerMonitor(0, "m", 8, 2, 2, Metrics(reg), interval=0)
    logits = torch.randn(6, 8)
    logits[1, 3] = float("nan")
    logits[4, 0] = float("inf")
    r = route(None, logits, layer=0, native_k=2, renormalize=True)
    monitor.record(r.selection, logits)
    monitor.add_rows(torch.zeros(8, dtype=torch.long))
    assert monitor.report().nonfinite_tokens == 2
    assert _value(reg, "adaptk_routing_nonfinite_tokens_total", layer="0") == 2

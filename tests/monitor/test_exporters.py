"""JSONL, Prometheus and (optional) TensorBoard exporters."""

import json
import logging

import pytest
import torch
from tiny_models import tiny_model

from adaptk.monitor import RoutingMonitor
from adaptk.monitor.exporters import JsonlExporter, PrometheusCollector, TensorBoardExporter

prometheus_client = pytest.importorskip("prometheus_client")


@pytest.fixture(scope="module")
def monitor():
    model = tiny_model("mixtral")
    mon = RoutingMonitor()
    with mon.attach(model), torch.no_grad():
        model(torch.randint(0, 64, (2, 16)))
    return mon


def test_jsonl(tmp_path, monitor):
    exp = JsonlExporter(monitor, tmp_path / "m.jsonl")
    exp.write(step=1)
    exp.write(step=2)
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    assert json.loads(lines[0])["layers"][0]["tokens"] == 32


def test_prometheus_own_registry_and_names(monitor):
    from prometheus_client.parser import text_string_to_metric_families

    before = set(prometheus_client.REGISTRY._collector_to_names)
    col = PrometheusCollector(monitor)
    assert set(prometheus_client.REGISTRY._collector_to_names) == before  # global registry untouched
    fams = {f.name: f for f in text_string_to_metric_families(col.exposition().decode())}
    assert "adaptk_routing_entropy_nats" in fams and "adaptk_routing_tokens" in fams
    toks = [s for s in fams["adaptk_routing_tokens"].samples if s.name.endswith("_total")]
    assert {s.labels["layer"]: s.value for s in toks} == {"0": 32.0, "1": 32.0}
    experts = fams["adaptk_routing_expert_assignments"].samples
    assert {s.labels["expert"] for s in experts if s.name.endswith("_total")} == {str(e) for e in range(8)}
    hist = [s for s in fams["adaptk_routing_token_entropy_nats"].samples if s.name.endswith("_count")]
    assert hist[0].value == 32.0


def test_prometheus_bounds_expert_labels(monitor):
    col = PrometheusCollector(monitor, max_expert_labels=4)
    assert b'expert="' not in col.exposition()
    with pytest.raises(ValueError):
        PrometheusCollector(monitor, max_expert_labels=-1)


def test_tensorboard_optional(tmp_path, monitor, caplog):
    with caplog.at_level(logging.INFO):
        exp = TensorBoardExporter(monitor, tmp_path / "tb")
    exp.write(step=0)  # no-op without tensorboard
    if not exp.enabled:
        assert "tensorboard is not installed" in caplog.text
    else:
        assert any((tmp_path / "tb").iterdir())
    exp.close()

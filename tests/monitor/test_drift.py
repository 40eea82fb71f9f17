"""Drift scores separate two routing distributions; baselines are validated."""

import json

import pytest
import torch

from adaptk.monitor import Baseline, BaselineError, DriftConfig, LayerState, MonitorReport, score_drift

N = 8
FP = {"architecture": "Synthetic", "num_moe_layers": 2, "num_experts": [N, N], "native_k": [2, 2]}


def report(seed, shift=0.0, t=2000):
    layers = []
    for layer in range(2):
        g = torch.Generator().manual_seed(seed * 10 + layer)
        logits = torch.randn(t, N, generator=g) * 1.5
        logits[:, :2] += shift  # traffic that prefers two experts, more confidently
        p = torch.softmax(logits, -1)
        s = LayerState(layer, f"l{layer}", N, 2)
        s.update(p, p.topk(2, -1).indices)
        layers.append(s.summary())
    return MonitorReport(layers, dict(FP))


def test_same_distribution_does_not_fire():
    base = Baseline.from_report(report(0))
    d = score_drift(base, report(1))
    assert not d.shifted and all(x.judged for x in d.layers)
    assert all(x.psi_entropy < 0.1 and x.psi_usage < 0.1 for x in d.layers)


def test_shifted_distribution_fires():
    base = Baseline.from_report(report(0))
    d = score_drift(base, report(1, shift=2.0))
    assert d.shifted_layers == [0, 1]
    assert all(x.reasons for x in d.layers)
    assert "shifted layers: [0, 1]" in d.table()


def test_too_few_tokens_not_judged():
    d = score_drift(Baseline.from_report(report(0)), report(1, shift=3.0, t=20))
    assert not d.shifted and not any(x.judged for x in d.layers)


def test_round_trip(tmp_path):
    base = Baseline.from_report(report(0), source="corpus")
    path = base.save(tmp_path / "b.json")
    assert Baseline.load(path) == base


def _write(tmp_path, data):
    p = tmp_path / "b.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def test_rejections(tmp_path):
    good = Baseline.from_report(report(0)).to_dict()
    with pytest.raises(BaselineError, match="not valid JSON"):
        Baseline.load(_write(tmp_path, "{nope"))
    with pytest.raises(BaselineError, match="does not exist"):
        Baseline.load(tmp_path / "missing.json")
    with pytest.raises(BaselineError, match="not an adaptk routing baseline"):
        Baseline.load(_write(tmp_path, {"layers": []}))
    with pytest.raises(BaselineError, match="newer than this adaptk"):
        Baseline.load(_write(tmp_path, {**good, "version": 99}))
    with pytest.raises(BaselineError, match="malformed"):
        Baseline.load(_write(tmp_path, {**good, "layers": good["layers"][:1]}))
    bad_hist = json.loads(json.dumps(good))
    bad_hist["layers"][0]["expert_counts"] = [1, 2]
    with pytest.raises(BaselineError, match="malformed"):
        Baseline.load(_write(tmp_path, bad_hist))
    del bad_hist["fingerprint"]
    with pytest.raises(BaselineError, match="malformed"):
        Baseline.load(_write(tmp_path, bad_hist))
    other = Baseline.from_dict({**good, "fingerprint": {**FP, "architecture": "Other"}})
    with pytest.raises(BaselineError, match="another model"):
        score_drift(other, report(1))


def test_config_validation():
    with pytest.raises(ValueError):
        DriftConfig(js_threshold=2.0)
    with pytest.raises(ValueError):
        DriftConfig(psi_threshold=0)

"""Policy files: round trip, and clear rejections."""

from __future__ import annotations

import json

import pytest
from tiny_models import tiny_model

from adaptk.calibrate import FORMAT_VERSION, PolicyFileError, load_policy_file, make_policy_file, save_policy_file
from adaptk.routing import EntropyThreshold, RatioSkip


@pytest.fixture(scope="module")
def mixtral():
    return tiny_model("mixtral")


def _file(model, policy):
    return make_policy_file(model, policy, {"strategy": "theory", "tokens": 0, "targets": {"alphas": [0.6]}})


def test_round_trip(tmp_path, mixtral):
    pol = EntropyThreshold((1, 2), ((0.5,), (0.7,)))
    path = save_policy_file(_file(mixtral, pol), tmp_path / "p.json")
    pf = load_policy_file(path, mixtral)
    assert pf.version == FORMAT_VERSION and pf.build_policy() == pol
    assert pf.model.architecture == "MixtralForCausalLM" and pf.model.native_k == [2, 2]
    assert pf.calibration.strategy == "theory"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".adaptk-")]


def test_other_model_rejected_with_difference(tmp_path, mixtral):
    path = save_policy_file(_file(mixtral, RatioSkip(0.3, 2)), tmp_path / "p.json")
    other = tiny_model("qwen3_moe")
    with pytest.raises(PolicyFileError, match=r"another model.*architecture.*native_k"):
        load_policy_file(path, other)
    deeper = tiny_model("mixtral", num_hidden_layers=3)
    with pytest.raises(PolicyFileError, match="num_moe_layers: policy file has 2, model has 3"):
        load_policy_file(path, deeper)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=FORMAT_VERSION + 1), "newer than this adaptk"),
    (lambda d: d.pop("version"), "no 'version'"),
    (lambda d: d["model"].pop("native_k"), "model.native_k"),
    (lambda d: d.update(policy={"rule": "nope"}), "unknown policy rule"),
    (lambda d: d.update(policy={"rule": "top_p", "p": 3.0}), "invalid policy"),
])
def test_malformed_rejected(tmp_path, mixtral, mutate, message):
    path = save_policy_file(_file(mixtral, RatioSkip(0.3, 2)), tmp_path / "p.json")
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyFileError, match=message):
        load_policy_file(path)


def test_not_json_and_missing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PolicyFileError, match="not valid JSON"):
        load_policy_file(bad)
    with pytest.raises(PolicyFileError, match="does not exist"):
        load_policy_file(tmp_path / "missing.json")


def test_unwritable_path(tmp_path, mixtral):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PolicyFileError, match="cannot write"):
        save_policy_file(_file(mixtral, RatioSkip(0.3, 2)), blocker / "sub" / "p.json")

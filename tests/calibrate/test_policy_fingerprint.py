"""Policy files are tied to the weights they were calibrated on, and to sensible policies."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from tiny_models import tiny_model

from adaptk.calibrate import FORMAT_VERSION, PolicyFileError, load_policy, load_policy_file, make_policy_file
from adaptk.calibrate.fingerprint import weights_fingerprint
from adaptk.calibrate.policy_file import save_policy_file
from adaptk.models import find_moe_layers
from adaptk.routing import EntropyThreshold, FixedTopK, RatioSkip


@pytest.fixture(scope="module")
def mixtral():
    return tiny_model("mixtral")


def other_checkpoint(model, scale: float = 0.01):
    """Same architecture and shape, routers moved a little (a fine-tune of ``model``)."""
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in find_moe_layers(other):
            layer.router.weight.add_(torch.randn(layer.router.weight.shape, generator=g) * scale)
    return other


def _save(model, policy, path):
    return save_policy_file(make_policy_file(model, policy, {"strategy": "theory"}), path)


def test_weights_fingerprint_recorded(tmp_path, mixtral):
    pf = load_policy_file(_save(mixtral, RatioSkip(0.3, 2), tmp_path / "p.json"))
    assert pf.version == FORMAT_VERSION == 2
    assert pf.model.weights_sha256 == weights_fingerprint(mixtral)
    assert len(pf.model.weights_sha256) == 64
    assert weights_fingerprint(other_checkpoint(mixtral)) != pf.model.weights_sha256


def test_same_checkpoint_in_bfloat16_has_the_same_fingerprint(mixtral):
    assert weights_fingerprint(copy.deepcopy(mixtral).to(torch.bfloat16)) == weights_fingerprint(mixtral)
    assert weights_fingerprint(other_checkpoint(mixtral).to(torch.bfloat16)) != weights_fingerprint(mixtral)


def test_fingerprint_covers_routers_only_and_their_biases(mixtral):
    fp = weights_fingerprint(mixtral)
    m = copy.deepcopy(mixtral)
    with torch.no_grad():
        m.lm_head.weight.add_(1.0)  # not a router: a fine-tune of the head alone keeps the thresholds' meaning
    assert weights_fingerprint(m) == fp
    ds = tiny_model("deepseek_v3")
    fp = weights_fingerprint(ds)
    with torch.no_grad():
        find_moe_layers(ds)[-1].router.e_score_correction_bias.add_(0.01)
    assert weights_fingerprint(ds) != fp


def test_other_checkpoint_warns_by_default(tmp_path, mixtral, caplog):
    path = _save(mixtral, RatioSkip(0.3, 2), tmp_path / "p.json")
    other = other_checkpoint(mixtral)
    with caplog.at_level(logging.WARNING, logger="adaptk.calibrate.policy_file"):
        pf = load_policy_file(path, other)
    assert pf.build_policy() == RatioSkip(0.3, 2)
    msg = caplog.text
    assert "another checkpoint" in msg and "adaptk calibrate" in msg
    assert weights_fingerprint(mixtral)[:12] in msg and weights_fingerprint(other)[:12] in msg


def test_other_checkpoint_refused_when_strict(tmp_path, mixtral):
    path = _save(mixtral, RatioSkip(0.3, 2), tmp_path / "p.json")
    with pytest.raises(PolicyFileError, match=r"another checkpoint.*adaptk calibrate"):
        load_policy_file(path, other_checkpoint(mixtral), strict=True)
    with pytest.raises(PolicyFileError, match="another checkpoint"):
        load_policy(path, other_checkpoint(mixtral), strict=True)


def test_same_weights_load_quietly_even_when_strict(tmp_path, mixtral, caplog):
    path = _save(mixtral, RatioSkip(0.3, 2), tmp_path / "p.json")
    with caplog.at_level(logging.INFO, logger="adaptk"):
        load_policy_file(path, copy.deepcopy(mixtral), strict=True)
    assert not caplog.records


def test_version_1_file_without_fingerprint_still_loads(tmp_path, mixtral, caplog):
    path = _save(mixtral, RatioSkip(0.3, 2), tmp_path / "p.json")
    data = json.loads(path.read_text())
    data["version"] = 1
    del data["model"]["weights_sha256"]
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.INFO, logger="adaptk.calibrate.policy_file"):
        pf = load_policy_file(path, other_checkpoint(mixtral), strict=True)
    assert pf.version == 1 and pf.model.weights_sha256 is None
    assert "records no weights fingerprint" in caplog.text and "adaptk calibrate" in caplog.text


def test_folder_given_as_policy_file(tmp_path):
    with pytest.raises(PolicyFileError, match=r"is a folder; pass a policy file.*adaptk calibrate"):
        load_policy_file(tmp_path)


def test_loading_against_a_model_logs_the_policys_warnings(tmp_path, mixtral, caplog):
    never = _save(mixtral, EntropyThreshold((1, 2), (5.0,)), tmp_path / "never.json")
    wide = _save(mixtral, FixedTopK(4), tmp_path / "wide.json")
    with caplog.at_level(logging.WARNING, logger="adaptk.routing.policies"):
        load_policy_file(never, mixtral)
        load_policy_file(wide, mixtral)
    assert "can never change k" in caplog.text and "trained with top-2" in caplog.text


def test_loaded_policy_warned_once_when_patched(tmp_path, mixtral, caplog):
    import adaptk

    path = _save(mixtral, EntropyThreshold((1, 2), (5.0,)), tmp_path / "never.json")
    with caplog.at_level(logging.WARNING, logger="adaptk.routing.policies"):
        policy = load_policy(path, mixtral)
        with adaptk.patch(mixtral, policy):
            pass
    assert caplog.text.count("can never change k") == 1


def test_policy_that_cannot_route_the_model_refused_on_load(tmp_path, mixtral):
    path = _save(mixtral, EntropyThreshold((1, 2), ((0.5,), (0.7,))), tmp_path / "p.json")
    data = json.loads(path.read_text())
    data["policy"]["thresholds"] = [[0.5]]  # one layer's thresholds for a 2-layer model
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyFileError, match="cannot route this model.*2"):
        load_policy_file(path, mixtral)

"""``adaptk monitor`` / ``adaptk evaluate``: policy files of another checkpoint, ``--strict``,
folders given as files, and baselines of another model: one clear line and exit 2."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import transformers
from calibrate.helpers import random_text, saved_tiny_model

from adaptk.calibrate import make_policy_file
from adaptk.calibrate.policy_file import save_policy_file
from adaptk.cli.main import main
from adaptk.models import find_moe_layers
from adaptk.routing import RatioSkip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("policy-checks")
    model_dir = saved_tiny_model(d / "model")
    text = d / "text.txt"
    text.write_text(random_text(600))
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tuned = copy.deepcopy(model)  # same shape, routers moved: another checkpoint
    with torch.no_grad():
        for layer in find_moe_layers(tuned):
            layer.router.weight.mul_(1.05)
    fits, other = d / "fits.json", d / "other.json"
    save_policy_file(make_policy_file(model, RatioSkip(0.3, 2), {"strategy": "theory"}), fits)
    save_policy_file(make_policy_file(tuned, RatioSkip(0.3, 2), {"strategy": "theory"}), other)
    return {"model": model_dir, "text": str(text), "fits": str(fits), "other": str(other), "dir": d}


def _monitor(s, *extra):
    return ["monitor", "--model", s["model"], "--text-file", s["text"], "--window", "32", "--json", *extra]


def test_monitor_policy_of_another_checkpoint_warns(setup, caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="adaptk.calibrate.policy_file"):
        assert main(_monitor(setup, "--policy", setup["fits"])) == 0
        assert "another checkpoint" not in caplog.text
        assert main(_monitor(setup, "--policy", setup["other"])) == 0
    assert "another checkpoint" in caplog.text and "--strict" in caplog.text


def test_monitor_strict_refuses_policy_of_another_checkpoint(setup, capsys):
    assert main(_monitor(setup, "--policy", setup["fits"], "--strict")) == 0
    capsys.readouterr()
    assert main(_monitor(setup, "--policy", setup["other"], "--strict")) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "error:" in x]  # transformers' progress bar aside
    assert line.startswith("adaptk monitor: error: policy file") and "another checkpoint" in line
    assert "adaptk calibrate" in line and "Traceback" not in err


def test_evaluate_strict_refuses_policy_of_another_checkpoint(setup, capsys):
    rc = main(["evaluate", "--model", setup["model"], "--text-file", setup["text"], "--policy", setup["other"],
               "--strict", "--no-progress", "--out", str(setup["dir"] / "rep")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "adaptk evaluate: error:" in err and "another checkpoint" in err
    assert not (setup["dir"] / "rep").exists()


@pytest.mark.parametrize("command", ["monitor", "evaluate"])
def test_folder_as_policy(setup, capsys, command):
    args = (_monitor(setup, "--policy", str(setup["dir"])) if command == "monitor" else
            ["evaluate", "--model", setup["model"], "--text-file", setup["text"], "--policy", str(setup["dir"]),
             "--no-progress", "--out", str(setup["dir"] / "rep2")])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"adaptk {command}: error:" in err and "is a folder" in err and "adaptk calibrate" in err
    assert "Errno" not in err


def test_baseline_of_another_model(setup, tmp_path, capsys):
    from calibrate.helpers import tiny_tokenizer
    from tiny_models import tiny_model

    deeper = tmp_path / "deeper"
    tiny_model("mixtral", num_hidden_layers=3).save_pretrained(deeper)
    tiny_tokenizer().save_pretrained(deeper)
    base = tmp_path / "base.json"
    assert main(["monitor", "--model", str(deeper), "--text-file", setup["text"], "--window", "32",
                 "--bins", "16", "--save-baseline", str(base)]) == 0
    capsys.readouterr()
    assert main(_monitor(setup, "--baseline", str(base))) == 2  # other model *and* other bins
    err = capsys.readouterr().err
    assert "adaptk monitor: error:" in err and "another model" in err and "num_moe_layers" in err
    assert "bins" not in err and "--save-baseline" in err


def test_folder_as_baseline(setup, capsys):
    assert main(_monitor(setup, "--baseline", str(setup["dir"]))) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "--save-baseline" in err and "Traceback" not in err

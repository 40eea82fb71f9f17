"""``adaptk serve`` without starting vLLM: the command it would run, and a policy file that does
not fit the model refused before vLLM starts (exit 2, adaptk's message)."""

import json

import pytest
import transformers
from tiny_models import COMMON, TINY

from adaptk.calibrate import make_policy_file, save_policy_file
from adaptk.cli.main import main
from adaptk.routing import FixedTopK


def test_print_command(capsys, tmp_path):
    assert main(["serve", "--model", "default", "--monitor", "--print-command", "--", "--port", "8123"]) == 0
    out = capsys.readouterr().out
    assert "ADAPTK_MONITOR=1" in out and "ADAPTK_POLICY" not in out
    assert "-m vllm.entrypoints.openai.api_server --model " in out and out.rstrip().endswith("--port 8123")


def _other_model_policy(tmp_path):
    cls, kwargs = TINY["mixtral"]
    other = transformers.MixtralForCausalLM(getattr(transformers, cls)(**{**COMMON, **kwargs}))
    return save_policy_file(make_policy_file(other, FixedTopK(2), {"strategy": "manual"}), tmp_path / "p.json")


@pytest.mark.parametrize("what", ["other model", "malformed"])
def test_a_policy_that_does_not_fit_exits_2_before_vllm(capsys, tmp_path, what):
    if what == "other model":
        path, message = _other_model_policy(tmp_path), "was made for another model"
    else:
        path, message = tmp_path / "bad.json", "is malformed"
        path.write_text(json.dumps({"version": 2}))
    assert main(["serve", "--model", "default", "--policy", str(path), "--print-command"]) == 2
    assert message in capsys.readouterr().err

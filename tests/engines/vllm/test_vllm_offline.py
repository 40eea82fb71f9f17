"""The plugin inside vLLM (offline engine, the shipped default model, float32, greedy): FixedTopK at
the native k gives plain vLLM's tokens, an entropy policy runs fewer expert rows (Σ k, counted at
the kernel), and a policy file that does not fit fails the start with adaptk's message."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adaptk.assets import default_model_path

pytestmark = pytest.mark.vllm
RUN = Path(__file__).with_name("vllm_run.py")
PROMPTS = ["The old man said", "In the beginning"]


def _run(tmp_path, model=None, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTK_")}
    full.update(VLLM_CACHE_ROOT=str(tmp_path / "vllm-cache"), VLLM_CPU_KVCACHE_SPACE="1", **env)
    proc = subprocess.run([sys.executable, str(RUN), str(model or default_model_path()), *PROMPTS], env=full,
                          capture_output=True, text=True, timeout=400)
    result = next((line for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
    return proc, (json.loads(result[len("RESULT "):]) if result else None)


def _policy_file(tmp_path, policy, name, model=None):
    from transformers import AutoModelForCausalLM

    from adaptk.calibrate import make_policy_file, save_policy_file

    model = model or AutoModelForCausalLM.from_pretrained(default_model_path())
    return str(save_policy_file(make_policy_file(model, policy, {"strategy": "manual"}), tmp_path / name))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    proc, out = _run(tmp_path_factory.mktemp("plain"))
    assert out is not None, proc.stderr[-3000:]
    assert out["layers"] == []  # no ADAPTK_*: the plugin did nothing
    return out


def test_fixed_top_k_native_equals_plain_vllm(tmp_path, plain):
    from adaptk.routing import FixedTopK

    proc, out = _run(tmp_path, ADAPTK_POLICY=_policy_file(tmp_path, FixedTopK(2), "fixed.json"))
    assert out is not None, proc.stderr[-3000:]
    assert out["ids"] == plain["ids"]
    assert len(out["layers"]) == 4
    for layer in out["layers"]:
        assert layer["executed_pairs"] == layer["native_pairs"] == 2 * layer["tokens"] > 0


def test_entropy_policy_runs_sum_of_k_rows(tmp_path, plain):
    from adaptk.routing import EntropyThreshold

    policy = EntropyThreshold.from_fractions([1, 2], [0.5], 8)
    proc, out = _run(tmp_path, ADAPTK_POLICY=_policy_file(tmp_path, policy, "entropy.json"))
    assert out is not None, proc.stderr[-3000:]
    assert [len(ids) for ids in out["ids"]] == [len(ids) for ids in plain["ids"]]
    executed = sum(x["executed_pairs"] for x in out["layers"])
    assert executed < sum(x["native_pairs"] for x in out["layers"])
    for layer in out["layers"]:  # the rows counted at the kernel are Σ k of the router's decisions
        assert layer["executed_pairs"] == sum(k * c for k, c in enumerate(layer["k_histogram"]))


def test_monitor_only_keeps_vllms_routing(tmp_path, plain):
    proc, out = _run(tmp_path, ADAPTK_MONITOR="1")
    assert out is not None, proc.stderr[-3000:]
    assert out["ids"] == plain["ids"]
    assert all(x["executed_pairs"] == x["native_pairs"] > 0 for x in out["layers"])


def test_policy_for_another_model_fails_the_start(tmp_path):
    import transformers
    from tiny_models import COMMON, TINY

    from adaptk.routing import FixedTopK

    cls, kwargs = TINY["mixtral"]
    other = transformers.MixtralForCausalLM(getattr(transformers, cls)(**{**COMMON, **kwargs}))
    proc, out = _run(tmp_path, ADAPTK_POLICY=_policy_file(tmp_path, FixedTopK(2), "other.json", other))
    assert out is None and proc.returncode != 0
    assert "was made for another model" in proc.stderr


def test_malformed_policy_fails_the_start(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc, out = _run(tmp_path, ADAPTK_POLICY=str(bad))
    assert out is None and proc.returncode != 0
    assert "is not valid JSON" in proc.stderr

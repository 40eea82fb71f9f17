"""One --model parser and loader for every command: 'default', local folders, hub names; clear
errors for missing paths, non-model folders, corrupt weights, missing tokenizers, dense models
and an unreachable hub (no test touches the network)."""

import os
import shutil

import pytest
from tiny_models import tiny_model

from adaptk.cli.main import main
from adaptk.errors import UnsupportedModelError
from adaptk.loading import hub
from adaptk.loading import model as model_io
from adaptk.loading.errors import (
    HubUnreachableError,
    ModelFileError,
    ModelPathError,
    TokenizerMissingError,
)
from adaptk.loading.modelspec import (
    default_model_folder,
    is_hub_id,
    looks_like_path,
    resolve_model,
)

TEXT = "def f(x):\n    return [i * 2 for i in range(x)]\n" * 40


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(TEXT)
    return str(p)


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything would reach the network: the probe says unreachable, nothing is cached."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    probes = []
    monkeypatch.setattr(hub, "reachable", lambda host, port, timeout=hub.PROBE_TIMEOUT_S: probes.append((host, port)) or False)
    monkeypatch.setattr(hub, "is_cached", lambda repo_id: False)

    def no_download(*a, **k):
        raise AssertionError("from_pretrained called for an unreachable hub name")

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_download)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_download)
    return probes


def test_resolution_rules(tmp_path):
    assert resolve_model("default").path == resolve_model(None).path == str(default_model_folder())
    shutil.copy(default_model_folder() / "config.json", tmp_path / "config.json")
    assert resolve_model(str(tmp_path)).kind == "local"
    for hub_name in ("gpt2", "mistralai/Mixtral-8x7B-v0.1", "Qwen/Qwen1.5-MoE-A2.7B"):
        assert resolve_model(hub_name).kind == "hub" and is_hub_id(hub_name)
    for path in ("does/not/exist", "./nope", "/nonexistent/model", "~/no-such-adaptk-model", "a/b/"):
        assert looks_like_path(path)
        with pytest.raises(ModelPathError, match=f"local path {path}.* does not exist"):
            resolve_model(path)
    with pytest.raises(ModelPathError, match="not a model folder"):
        resolve_model(str(tmp_path / ".."))
    with pytest.raises(ModelPathError, match="is a file, not a model folder"):
        resolve_model(str(tmp_path / "config.json"))
    with pytest.raises(ModelPathError, match="valid hub name"):
        resolve_model("two words")


def test_nonexistent_path_is_named_by_every_command(capsys, no_hub):
    for argv in (["calibrate", "--target-fraction", "0.75"], ["evaluate"], ["inspect"], ["monitor", "--corpus", "stdlib"]):
        assert main([*argv, "--model", "does/not/exist"]) == 2
        err = capsys.readouterr().err
        assert "local path does/not/exist" in err and "does not exist" in err and "Repo id" not in err
    assert no_hub == []


def test_calibrate_and_inspect_accept_default(tmp_path, text_file, capsys):
    out = tmp_path / "p.json"
    assert main(["calibrate", "--model", "default", "--text-file", text_file, "--strategy", "theory",
                 "--alphas", "0.6", "--no-verify", "--max-tokens", "256", "--window", "128", "--no-progress",
                 "--out", str(out)]) == 0
    assert out.is_file() and "MixtralForCausalLM" in capsys.readouterr().out
    assert main(["inspect", "--model", "default", "--text-file", text_file, "--fixed", "1"]) == 0
    assert "4 MoE layers" in capsys.readouterr().out


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m") / "truncated"
    shutil.copytree(default_model_folder(), folder)
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    return folder


@pytest.mark.parametrize("argv", [
    ["evaluate", "--no-progress"],
    ["calibrate", "--target-fraction", "0.75", "--no-progress"],
    ["inspect"],
    ["monitor", "--corpus", "stdlib"],
])
def test_truncated_weights_name_the_file(argv, truncated, tmp_path, capsys):
    weights = truncated / "model.safetensors"
    before = weights.read_bytes()
    out = ["--out", str(tmp_path / "out")] if argv[0] in ("evaluate", "calibrate") else []
    assert main([*argv, *out, "--model", str(truncated)]) == 2
    err = capsys.readouterr().err
    assert f"{weights} is truncated or corrupt" in err and "Traceback" not in err
    assert weights.read_bytes() == before and not (tmp_path / "out").exists()


def test_bench_reads_model_folders_the_same_way(truncated):
    import torch

    from adaptk.bench.model import load_model

    with pytest.raises(ModelFileError, match="model.safetensors"):
        load_model(str(truncated), torch.float32)
    with pytest.raises(ModelPathError, match="does not exist"):
        load_model("does/not/exist", torch.float32)
    assert load_model("default", torch.float32)[1] == "the shipped default model"


def _dense_llama(folder):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(folder)
    return folder


def test_dense_model_without_tokenizer(tmp_path, capsys):
    folder = _dense_llama(tmp_path / "llama")
    assert main(["calibrate", "--model", str(folder), "--target-fraction", "0.75"]) == 2
    err = capsys.readouterr().err
    assert "not a Mixture-of-Experts model" in err and "no MoE layer" in err
    assert f"{folder} has no tokenizer files" in err and "tokenizer.json" in err
    assert "sentencepiece" not in err.split("expected one of")[0]
    with pytest.raises(UnsupportedModelError):
        model_io.load_model(str(folder))


def test_moe_model_without_tokenizer(tmp_path):
    folder = tmp_path / "mixtral"
    tiny_model("mixtral").save_pretrained(folder)
    with pytest.raises(TokenizerMissingError, match=r"has no tokenizer files \(expected one of tokenizer.json"):
        model_io.load_model_and_tokenizer(str(folder))
    model, source = model_io.load_model(str(folder))  # the model alone loads (inspect without a text)
    assert source.kind == "local"


def test_offline_hub_name_fails_at_once(monkeypatch, no_hub, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match="HF_HUB_OFFLINE is set.*not in the local Hugging Face cache"):
        model_io.load_model_and_tokenizer("someorg/some-moe")
    assert main(["inspect", "--model", "someorg/some-moe"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    assert no_hub == []  # offline: not even a probe


def test_unreachable_hub_fails_after_one_probe(monkeypatch, no_hub, capsys):
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.example:8080")
    assert main(["calibrate", "--model", "someorg/some-moe", "--target-fraction", "0.75"]) == 2
    err = capsys.readouterr().err
    assert "hub (hub.example:8080) is unreachable" in err and "HF_HUB_OFFLINE=1" in err
    assert no_hub == [("hub.example", 8080)]


def test_cached_model_loads_offline_when_the_hub_is_unreachable(monkeypatch, no_hub, caplog):
    monkeypatch.setattr(hub, "is_cached", lambda repo_id: True)
    assert model_io._hub_local_only("someorg/some-moe") is True
    assert "unreachable" in caplog.text
    monkeypatch.setattr(hub, "reachable", lambda *a, **k: True)
    assert model_io._hub_local_only("someorg/some-moe") is False


def test_offline_switches_and_endpoint():
    assert hub.offline_setting({}) is None
    assert hub.offline_setting({"HF_HUB_OFFLINE": "0"}) is None
    assert hub.offline_setting({"HF_HUB_OFFLINE": "1"}) == "HF_HUB_OFFLINE"
    assert hub.offline_setting({"TRANSFORMERS_OFFLINE": "yes"}) == "TRANSFORMERS_OFFLINE"
    assert hub.endpoint({}) == ("huggingface.co", 443)
    assert hub.endpoint({"HF_ENDPOINT": "https://mirror.example/"}) == ("mirror.example", 443)
    assert hub.endpoint({"HF_ENDPOINT": "http://10.0.0.1:8080"}) == ("10.0.0.1", 8080)


def test_probe_of_a_closed_port_is_false():
    import socket

    with socket.socket() as s:  # a local port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert hub.reachable("127.0.0.1", port, timeout=1.0) is False

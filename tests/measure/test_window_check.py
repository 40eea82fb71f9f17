"""A window beyond the model's positions is refused wherever windows are made (perplexity,
router statistics, calibration, monitoring, the CLIs); one beyond the recorded training length
is logged."""

import json
import logging

import pytest
import torch
from tiny_models import tiny_model

from adaptk.calibrate import CalibrateConfig, calibrate, collect_router_stats
from adaptk.cli.main import main
from adaptk.measure.perplexity import (
    WindowConfig,
    WindowTooLongError,
    check_window,
    position_limit,
    sliding_window_perplexity,
    trained_length,
)
from adaptk.monitor.runner import monitor_ids

LIMIT = 64  # tiny_models: max_position_embeddings


def ids(n):
    return torch.randint(0, 64, (n,), generator=torch.Generator().manual_seed(0))


def test_position_limit_and_trained_length():
    assert position_limit(tiny_model("mixtral").config) == (LIMIT, "max_position_embeddings")
    assert position_limit(object()) is None
    assert trained_length({"seq_len": 128}) == 128
    assert trained_length({"config": {"seq_len": 64}}) == 64
    assert trained_length({"config": {}}) is None and trained_length({"seq_len": True}) is None


def test_every_window_maker_refuses_a_window_beyond_the_positions():
    model = tiny_model("mixtral")
    check_window(model, LIMIT)
    with pytest.raises(WindowTooLongError, match=rf"window of {LIMIT + 1} tokens is longer than the {LIMIT} positions"):
        check_window(model, LIMIT + 1)
    x = ids(300)
    with pytest.raises(WindowTooLongError, match="max_position_embeddings"):
        sliding_window_perplexity(model, x, WindowConfig(128, 64))
    with pytest.raises(WindowTooLongError):
        collect_router_stats(model, x, window=128)
    with pytest.raises(WindowTooLongError):
        calibrate(model, x, CalibrateConfig("theory", alphas=(0.6,), window=128, verify=False))
    with pytest.raises(WindowTooLongError):
        monitor_ids(model, x.tolist(), window=128)


def test_windows_clipped_to_a_short_text_still_run():
    model = tiny_model("mixtral")  # a 512 window over 50 tokens is one sequence of 50: fine
    assert collect_router_stats(model, ids(50), window=512).tokens == 50
    assert monitor_ids(model, ids(50).tolist(), window=512).compute().tokens == 50


def test_a_window_past_the_training_length_is_logged(tmp_path, caplog):
    from transformers import AutoModelForCausalLM

    tiny_model("mixtral").save_pretrained(tmp_path)
    (tmp_path / "train_summary.json").write_text(json.dumps({"config": {"seq_len": 16}}))
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="adaptk.measure.perplexity"):
        check_window(model, 16)
        assert caplog.records == []
        check_window(model, 32)
    assert len(caplog.records) == 1 and "training sequence length 16" in caplog.text
    assert str(tmp_path / "train_summary.json") in caplog.text


def _long_text(tmp_path):
    p = tmp_path / "long.txt"
    p.write_text("def f(x):\n    return [i * 2 for i in range(x)]\n" * 400)  # well over 1024 tokens
    return str(p)


@pytest.mark.parametrize("argv", [
    ["evaluate", "--no-progress", "--stride", "128"],
    ["calibrate", "--target-fraction", "0.75", "--no-progress"],
    ["monitor", "--model", "default"],
])
def test_cli_refuses_a_window_beyond_the_default_models_positions(argv, tmp_path, capsys):
    out = tmp_path / "out"
    extra = ["--out", str(out)] if argv[0] != "monitor" else []
    assert main([*argv, *extra, "--text-file", _long_text(tmp_path), "--window", "1024"]) == 2
    err = capsys.readouterr().err
    assert "window of 1024 tokens is longer than the 512 positions" in err and "--window 512" in err
    assert not out.exists()

"""The pipeline and the CLI on a tiny saved model and tokenizer (offline), and bad input."""

from __future__ import annotations

import json

import pytest
from calibrate.helpers import random_ids, random_text, saved_tiny_model
from tiny_models import tiny_model

from adaptk.cli.main import main
from adaptk.errors import UnsupportedModelError
from adaptk.evaluate import EvaluateConfig, TextTooShortError, run_evaluation
from adaptk.evaluate.pipeline import granularity_sets

SMALL = ["--calib-tokens", "128", "--eval-tokens", "96", "--match-tokens", "64", "--window", "32",
         "--stride", "16", "--max-passes", "6", "--no-progress"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    model = saved_tiny_model(d / "model")
    text = d / "text.txt"
    text.write_text(random_text(1200))
    return model, str(text), d


def test_cli_evaluate_and_report(saved, tmp_path, capsys):
    model, text, _ = saved
    out = tmp_path / "rep"
    # the first tokens: 64 of them match every rule within 1% on this text (a tiny-sample matter)
    rc = main(["evaluate", "--model", model, "--text-file", text, *SMALL, "--fractions", "0.75",
               "--sections", "pareto,tokens", "--sample", "first", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "native top-k" in printed and "entropy_per_layer" in printed and "ratio_skip" in printed
    r = json.loads((out / "results.json").read_text())
    assert r["meta"]["window"] == 32 and r["meta"]["stride"] == 16
    rows = r["pareto"]["rows"]
    assert {x["rule"] for x in rows} == {"fixed_k", "always_k-1", "entropy_global", "entropy_per_layer",
                                         "entropy_quality_alloc", "top_p", "ratio_skip_per_layer",
                                         "ratio_skip_median", "layer_static"}
    for x in rows:  # layer_static moves whole layers: its achieved k is reported, not matched within 1%
        if x["calib_avg_k"] is not None and x["rule"] != "layer_static":
            assert x["matched_within_tol"] and abs(x["calib_avg_k"] - x["target_avg_k"]) / x["target_avg_k"] <= 0.01
    assert r["calibrated"]["policy_file"]["calibration"]["strategy"] == "quality"
    for x in [r["calibrated"], *rows]:  # every increase carries its paired interval
        assert x["ppl_increase_lo"] <= x["ppl_increase"] <= x["ppl_increase_hi"]
    fixed = next(x for x in rows if x["rule"] == "fixed_k")
    assert fixed["ppl_increase_lo"] == fixed["ppl_increase_hi"] == 0.0  # native k: the baseline itself
    cs = r["pareto"]["comparisons"]
    assert {c["other"] for c in cs} | {cs[0]["best"]} == {x["rule"] for x in rows if x["target_avg_k"] and
                                                          x["budget_fraction"] == 0.75}
    assert all(c["distinguishable"] == (c["lo"] > 0 or c["hi"] < 0) for c in cs)
    assert "excludes 0" in printed and "ppl increase [95% CI]" in printed
    md = (out / "summary.md").read_text()
    assert "only where that interval excludes 0" in md and f"{r['calibrated']['ppl_increase_lo'] * 100:.2f}," in md
    rc = main(["report", str(out), "--out", str(tmp_path / "again")])
    assert rc == 0 and (tmp_path / "again" / "report.html").exists()


def test_cli_calibrate_then_evaluate_policy(saved, tmp_path, capsys):
    model, text, _ = saved
    pol = tmp_path / "p.json"
    rc = main(["calibrate", "--model", model, "--text-file", text, "--strategy", "ratio_skip_median",
               "--window", "32", "--max-tokens", "128", "--no-progress", "--out", str(pol)])
    assert rc == 0 and "ratio_skip" in capsys.readouterr().out
    written = json.loads(pol.read_text())
    assert written["version"] == 2 and len(written["model"]["weights_sha256"]) == 64
    rc = main(["evaluate", "--model", model, "--text-file", text, "--policy", str(pol), "--strict", *SMALL,
               "--sections", "",
               "--out", str(tmp_path / "r")])
    assert rc == 0


def test_cli_errors_are_clear(saved, tmp_path, capsys):
    model, text, d = saved
    short = tmp_path / "short.txt"
    short.write_text("w1 w2 w3")
    rc = main(["evaluate", "--model", model, "--text-file", str(short), *SMALL, "--out", str(tmp_path / "o")])
    assert rc == 2 and "shorter than one window" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 99}')
    rc = main(["evaluate", "--model", model, "--text-file", text, "--policy", str(bad), *SMALL,
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "newer than this adaptk" in capsys.readouterr().err
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    rc = main(["evaluate", "--model", model, "--text-file", text, *SMALL, "--sections", "",
               "--out", str(blocker / "rep")])
    assert rc == 2 and "cannot" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_no_moe_model_and_short_text():
    from transformers import LlamaConfig, LlamaForCausalLM

    dense = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2))
    ids = random_ids(128)
    with pytest.raises(UnsupportedModelError, match="no MoE layer"):
        run_evaluation(dense, ids, ids, EvaluateConfig(window=32, stride=16), progress=False)
    with pytest.raises(TextTooShortError, match="evaluation text has 20 tokens"):
        run_evaluation(tiny_model("mixtral"), ids, ids[:20], EvaluateConfig(window=32, stride=16), progress=False)


def test_granularity_sets():
    assert granularity_sets(2, 8) == [(1, 2), (1, 2, 3)]
    assert (1, 2, 4) in granularity_sets(4, 8) and granularity_sets(4, 8)[-1] == (1, 2, 3, 4, 5)


def test_cli_cross_domain(saved, tmp_path):
    model, text, d = saved
    other = d / "other.txt"
    other.write_text(random_text(400, seed=2))
    out = tmp_path / "x"
    rc = main(["evaluate", "--model", model, "--text-file", text, "--calib-text-file", str(other), *SMALL,
               "--sections", "", "--strategy", "percentile", "--target-fraction", "75%", "--out", str(out)])
    assert rc == 0
    r = json.loads((out / "results.json").read_text())
    assert r["meta"]["calib_source"] == "file:other.txt" and r["meta"]["eval_source"] == "file:text.txt"
    assert r["meta"]["calib_sha256"] != r["meta"]["eval_sha256"]


def test_cli_sample_first_and_spread(saved, tmp_path):
    model, text, d = saved
    other = d / "other2.txt"
    other.write_text(random_text(6000, seed=3))
    shas = {}
    for sample in ("first", "spread"):
        out = tmp_path / sample
        rc = main(["evaluate", "--model", model, "--text-file", str(other), "--calib-text-file", text, *SMALL,
                   "--sections", "", "--sample", sample, "--out", str(out)])
        assert rc == 0
        r = json.loads((out / "results.json").read_text())
        assert r["meta"]["sample"] == sample and r["meta"]["eval_tokens"] == 96
        shas[sample] = r["meta"]["eval_sha256"]
    assert shas["first"] != shas["spread"]

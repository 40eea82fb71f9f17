"""adaptk bench: configs, synthetic inputs, strategies and the report (correctness only; no
wall-clock time is ever asserted)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from doc_scripts import run_doc_script

from adaptk.bench import BenchConfig, KMix, LayerShape, run_bench
from adaptk.bench.config import PRESETS, default_mixes
from adaptk.bench.memory import peak_bytes
from adaptk.bench.report import render_markdown, write
from adaptk.bench.synthetic import apply_k, flop_ratio, k_per_token, make_experts, make_tokens
from adaptk.bench.timing import interleaved, paired_quartiles
from adaptk.routing import binding

TINY = LayerShape("tiny", 32, 48, 8, 2, 24)


def test_config_validation():
    with pytest.raises(ValueError):
        LayerShape("bad", 32, 48, 4, 5, 8)
    with pytest.raises(ValueError):
        KMix("bad", ((1, 0.3),))
    with pytest.raises(ValueError):
        BenchConfig(())
    with pytest.raises(ValueError):
        BenchConfig((TINY,), dtype="float16")
    for make in PRESETS.values():
        cfg = make()
        assert cfg.shapes and cfg.trials >= 1


def test_mixes_and_flop_ratio():
    mixes = {m.name: m for m in default_mixes(2)}
    k = k_per_token(mixes["half k=1"], 100, seed=0)
    assert k.shape == (100,) and int((k == 1).sum()) == 50 and int((k == 2).sum()) == 50
    assert flop_ratio(k, 2) == pytest.approx(0.75)
    assert flop_ratio(k_per_token(mixes["all k=1"], 7, seed=0), 2) == pytest.approx(0.5)
    assert "all k=4" in {m.name for m in default_mixes(8)}


def test_apply_k_marks_dropped_slots():
    index = torch.tensor([[3, 1], [0, 2], [5, 4]])
    weights = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]])
    i, w = apply_k(index, weights, torch.tensor([1, 2, 1]), num_experts=8)
    assert i.tolist() == [[3, 8], [0, 2], [5, 8]]
    assert w[0, 1] == 0 and w[2, 1] == 0 and w[1, 1] == pytest.approx(0.3)


def test_interleaved_runs_each_function_and_accepts_self_timed():
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1
        return 0.25

    med = interleaved({"a": a, "b": b}, trials=3, warmup=1, min_sample_s=0.0)
    assert calls == {"a": 4, "b": 4}
    assert med["b"] == 0.25 and med["a"] >= 0


def test_interleaved_repeats_fast_functions_within_a_sample():
    calls = {"fast": 0, "timed": 0}

    def fast():
        calls["fast"] += 1

    def timed():  # reports its own span: never repeated
        calls["timed"] += 1
        return 1e-9

    med = interleaved({"fast": fast, "timed": timed}, trials=3, warmup=1, min_sample_s=0.01)
    assert calls["timed"] == 4
    assert calls["fast"] > 4 * 10  # a no-op takes far less than 1 ms
    assert 0 < med["fast"] < 0.01


def test_peak_bytes_sees_temporaries():
    def f():
        x = torch.ones(1000, 1000)  # 4 MB
        return (x * 2).sum()

    assert peak_bytes(f, torch.device("cpu")) >= 4_000_000


def test_synthetic_layer_is_deterministic():
    e1, e2 = make_experts(TINY, torch.float32, torch.device("cpu"), 0), make_experts(TINY, torch.float32, torch.device("cpu"), 0)
    assert torch.equal(e1.gate_up_proj, e2.gate_up_proj)
    t = make_tokens(TINY, torch.float32, torch.device("cpu"), 0)
    assert t.index.shape == (24, 2) and torch.allclose(t.weights.sum(-1), torch.ones(24))


def test_run_bench_and_report(tmp_path):
    cfg = BenchConfig((TINY, LayerShape("tiny8", 32, 16, 16, 8, 5)), trials=1, warmup=0, model=None)
    result = run_bench(cfg, preset="test")
    assert len(result["layers"]) == 2
    layer = result["layers"][0]
    assert layer["flop_ratio"]["half k=1"] == pytest.approx(0.75)
    assert {"adaptk | fixed", "transformers eager | fixed", "transformers grouped_mm | fixed"} <= set(layer["seconds"])
    assert 0 < layer["routing"]["share_of_adaptive_layer"] < 1
    assert set(layer["peak_bytes"]) >= {"fixed", "half k=1"}
    assert layer["matmul_bound"]["kernel"] in ("exact", "onednn-packed", "native") and layer["matmul_bound"]["half k=1"] > 0
    assert layer["read_bound"]["half k=1"] >= layer["flop_ratio"]["half k=1"] and layer["read_bound"]["weights_gb_per_s"] > 0
    assert layer["routing"]["added_share"] < layer["routing"]["share_of_adaptive_layer"]
    cold = layer["routing"]["after_layer"]
    assert 0 < cold["share_of_adaptive_layer"] < 1 and cold["native_s"] > 0
    q1, q3 = layer["ratio_quartiles"]["adaptk | half k=1"]
    assert 0 < q1 <= q3
    md = render_markdown(result)
    assert "| tiny H32 I48 8x top-2 T24 | half k=1 | 0.750 |" in md
    assert "| tiny H32 I48 8x top-2 T24 | half k=1 | " + f"{q1:.3f}-{q3:.3f}" in md
    assert f"| {100 * cold['share_of_adaptive_layer']:.2f}% / {100 * cold['share_no_stats']:.2f}% / " in md
    jpath, mpath = write(result, tmp_path)
    assert json.loads(jpath.read_text())["preset"] == "test" and mpath.read_text() == md


def test_cli_parses_and_imports_lazily():
    from adaptk.cli import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--full", "--trials", "2", "--no-model"])
    assert args.preset == "full" and args.trials == 2 and args.no_model
    assert parser.parse_args([]).preset == "quick"


def test_native_top1_and_single_token_shapes():
    """Mixes that drop nothing (native k=1, half of one token) are left out, not crashed on."""
    shapes = (LayerShape("top1", 16, 16, 4, 1, 6), LayerShape("one", 16, 16, 4, 2, 1))
    cfg = BenchConfig(shapes, trials=1, warmup=0, model=None, backends=(), strategies=False)
    top1, one = run_bench(cfg)["layers"]
    assert set(top1["flop_ratio"]) == {"fixed"}
    assert set(one["flop_ratio"]) == {"fixed", "all k=1"}


def test_bench_model_times_every_arm_and_kernel():
    from adaptk.bench.config import ModelBench
    from adaptk.bench.model import bench_model
    from adaptk.experts.kernels import onednn_available

    cfg = BenchConfig((TINY,), trials=1, warmup=0, model=ModelBench(8, 2, (2,), models=("default",)))
    m = bench_model(cfg, "default")
    arms = [row["arm"] for row in m["rows"]]
    assert arms[:3] == ["unpatched", "adaptk fixed k=2", "adaptk entropy policy"]
    if onednn_available():
        assert {"adaptk entropy policy, onednn", "adaptk fixed k=2, onednn-packed"} <= set(arms)
    for row in m["rows"]:
        assert row["prefill_tok_s"] > 0 and row["decode_tok_s"] > 0
        if row["arm"].startswith("adaptk entropy"):
            assert 1.0 <= row["avg_k_prefill"] < 2.0  # median thresholds: about half the tokens at k=1
    md = render_markdown({"preset": "t", "dtype": "float32", "trials": 1, "warmup": 0,
                          "environment": {"torch": "x", "transformers": "y", "device": "cpu", "threads": 1},
                          "layers": [], "models": [m]})
    assert "| 2 | unpatched |" in md and "| 1.00 | 1.00 |" in md


def test_cli_model_option_is_repeatable():
    from adaptk.cli import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--model", "default", "--model", "random-mixtral-h512"])
    assert args.model == ["default", "random-mixtral-h512"]


def test_cli_custom_shapes_and_kernels():
    from adaptk.cli import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--shape", "m:64:32:8:2:16", "--kernels", "exact,onednn"])
    assert args.shape == [LayerShape("m", 64, 32, 8, 2, 16)] and args.kernels == ("exact", "onednn")
    for bad in (["--shape", "m:64:32:8:9:16"], ["--kernels", "onednn"], ["--kernels", "exact,fast"]):
        with pytest.raises(SystemExit):  # top-k above the expert count; exact missing; unknown kernel
            parser.parse_args(bad)


def test_paired_quartiles_pair_trials():
    # trial-to-trial drift hits both sides alike: the paired ratios stay at 0.5
    assert paired_quartiles([1.0, 2.0, 4.0, 8.0], [2.0, 4.0, 8.0, 16.0]) == (0.5, 0.5)
    q1, q3 = paired_quartiles([1.0, 1.0, 3.0, 3.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert (q1, q3) == (1.0, 3.0)
    assert paired_quartiles([2.0], [1.0]) == (2.0, 2.0)


def test_touched_fraction_ignores_sentinels():
    from adaptk.bench.layer import _touched_fraction

    index = torch.tensor([[0, 8], [3, 8], [0, 3]])  # 8 = sentinel of an 8-expert layer
    assert _touched_fraction(index, 8) == 2 / 8


@pytest.mark.parametrize(("check", "after", "floor"),
                         [("auto", False, False), ("deferred", False, False), ("auto", True, True)])
def test_router_time_script_runs(capsys, monkeypatch, check, after, floor):
    """docs/scripts/router_time.py (the router timings of docs/performance.md) runs."""
    args = ["--hidden", "32", "--width", "16", "--tokens", "3", "--calls", "10", "--check", check]
    args += (["--after-layer"] if after else []) + (["--floor"] if floor else [])
    out = run_doc_script("router_time.py", args, monkeypatch, capsys)
    names = [line.split(":")[0] for line in out]
    expected = ["router native top-k", "router adaptive", "router adaptive no stats", "router adaptive native",
                "router adaptive, torch ops", "router adaptive no stats, torch ops"]
    if floor:
        expected += ["module call, forward returns at once"]
        expected += ["C++ binding call that declines"] if binding.unavailable() is None else []
    assert names == ([f"{n} after a layer call" for n in expected] if after else expected)


def test_after_layer_routers_time_only_the_router(monkeypatch):
    """Each (layer, router) pair: the layer runs untimed, the router's span is averaged."""
    from adaptk.bench import layer as layer_mod

    clock = {"t": 0.0}
    calls = []

    def layer():
        calls.append("layer")
        clock["t"] += 100.0

    def router():
        calls.append("router")
        clock["t"] += 2.5

    monkeypatch.setitem(layer_mod.CLOCKS, "fake", lambda: clock["t"])
    fns = layer_mod._after_layer_fns({"router x": router}, layer, "fake", calls=3)
    assert list(fns) == ["router x after a layer call"]
    assert fns["router x after a layer call"]() == 2.5
    assert calls == ["layer", "router"] * 3

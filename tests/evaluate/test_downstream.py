"""The downstream section in the pipeline and the CLI (tiny saved model, offline): every run is
scored on the same items, the sweep's policies are the rows' own, and the accuracies agree with a
plain loop of full forward passes."""

from __future__ import annotations

import json
import random

import pytest
import torch
from calibrate.helpers import WORDS, random_text, saved_tiny_model, tiny_tokenizer
from tiny_models import tiny_model

from adaptk.calibrate import CalibrationError
from adaptk.cli.main import main
from adaptk.engines.transformers.patch import patch
from adaptk.evaluate import EvaluateConfig, run_evaluation
from adaptk.evaluate.downstream import build_task
from adaptk.evaluate.sweep import SweepConfig
from adaptk.loading.model import encode
from adaptk.routing import policy_from_dict

SMALL = ["--calib-tokens", "128", "--eval-tokens", "96", "--match-tokens", "64", "--window", "32",
         "--stride", "16", "--max-passes", "6", "--no-progress"]


def _code(n_lines: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS[:30]) for _ in range(rng.randint(3, 7))) + "\n" for _ in range(n_lines))


@torch.no_grad()
def _plain_accuracy(model, items) -> float:
    right = 0
    for it in items:
        scores = []
        for c in it.choices:
            lp = torch.log_softmax(model(input_ids=torch.tensor([[*it.context, *c]]), use_cache=False).logits[0].double(), -1)
            scores.append(sum(float(lp[len(it.context) - 1 + t, tok]) for t, tok in enumerate(c)))
        right += max(range(len(scores)), key=lambda j: (scores[j], -j)) == it.answer
    return right / len(items)


def test_pipeline_scores_every_run_on_the_same_items():
    tok = tiny_tokenizer()
    task = build_task([_code(80)], "next_line", lambda s: encode(tok, s).tolist(), window=32, n_items=24,
                      source="test")
    assert len(task.items) == 24 and all(len(it.context) + max(map(len, it.choices)) <= 32 for it in task.items)
    model = tiny_model("mixtral")
    ids = encode(tok, random_text(400)).reshape(-1)
    cfg = EvaluateConfig(calib_tokens=192, eval_tokens=192, match_tokens=96, window=32, stride=16,
                         sections=("pareto", "downstream"), sweep=SweepConfig(fractions=(0.75,),
                                                                               rules=("entropy_global", "top_p")))
    r = run_evaluation(model, ids[:192], ids[192:], cfg, progress=False, downstream=task)
    d = r["downstream"]
    rows = d["rows"]
    assert d["items"] == 24 and d["task"] == "next_line" and d["chance"] == 0.25
    assert [x["rule"] for x in rows[:2]] == ["native top-k", "calibrated"]
    assert [x["rule"] for x in rows[2:]] == [x["rule"] for x in r["pareto"]["rows"]]
    native = rows[0]
    assert native["accuracy_difference"] == 0.0 and native["difference_lo"] is None and not native["distinguishable"]
    assert native["accuracy"] == pytest.approx(_plain_accuracy(model, task.items))
    top_p = next(i for i, x in enumerate(r["pareto"]["rows"]) if x["rule"] == "top_p")
    with patch(model, policy_from_dict(r["pareto"]["rows"][top_p]["policy"])):
        want = _plain_accuracy(model, task.items)
    got = rows[2 + top_p]
    assert got["accuracy"] == pytest.approx(want) and got["average_k"] == r["pareto"]["rows"][top_p]["eval_avg_k"]
    for x in rows[1:]:
        assert x["accuracy_lo"] <= x["accuracy"] <= x["accuracy_hi"]
        assert x["difference_lo"] <= x["accuracy_difference"] <= x["difference_hi"]
        assert x["accuracy_difference"] == pytest.approx(x["accuracy"] - native["accuracy"])
        assert x["distinguishable"] == ((x["difference_lo"] > 0 or x["difference_hi"] < 0) and x["mcnemar_p"] < 0.05)
        assert x["right_only_here"] - x["right_only_native"] == round(x["accuracy_difference"] * d["items"])
    with pytest.raises(CalibrationError, match="needs its items"):
        run_evaluation(model, ids[:192], ids[192:], cfg, progress=False)


def test_cli_downstream(tmp_path, capsys):
    model = saved_tiny_model(tmp_path / "model")
    text = tmp_path / "m.py"
    text.write_text(_code(600))
    out = tmp_path / "rep"
    rc = main(["evaluate", "--model", model, "--text-file", str(text), *SMALL, "--sections", "downstream",
               "--downstream-items", "12", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    r = json.loads((out / "results.json").read_text())
    d = r["downstream"]
    assert d["task"] == "next_line" and d["items"] == 12 and "test part" in d["source"]
    assert [x["rule"] for x in d["rows"]] == ["native top-k", "calibrated"]  # no sweep: native and calibrated only
    assert "downstream next_line" in printed and f"native {d['rows'][0]['accuracy']:.1%}" in printed
    md = (out / "summary.md").read_text()
    assert "Downstream accuracy at matched k" in md and "Wilson" in md and "McNemar p" in md
    from adaptk.evaluate.summary import downstream_line
    from adaptk.report.tables import downstream

    for x in d["rows"]:  # results of the first downstream version (no McNemar test) still render
        for k in ("mcnemar_p", "right_only_here", "right_only_native"):
            x.pop(k, None)
    assert "McNemar" not in downstream_line(d) and "McNemar" not in str(downstream(r))
    assert main(["evaluate", "--model", model, "--text-file", str(text), *SMALL, "--sections", "downstream",
                 "--downstream-items", "0", "--out", str(tmp_path / "x")]) == 2

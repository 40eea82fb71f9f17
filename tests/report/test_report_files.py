"""The report: files exist, the HTML's numbers are the JSON's, and failures leave no partial files."""

from __future__ import annotations

import json
import re

import pytest
from calibrate.helpers import random_ids
from tiny_models import tiny_model

from adaptk.evaluate import EvaluateConfig, run_evaluation
from adaptk.report import ReportError, load_results, write_report
from adaptk.report.tables import fmt


@pytest.fixture(scope="module")
def results():
    cfg = EvaluateConfig(calib_tokens=160, eval_tokens=160, match_tokens=64, window=32, stride=16,
                         sections=("sensitivity", "tokens"), alphas=(0.5, 0.9))
    return run_evaluation(tiny_model("mixtral"), random_ids(160, 1), random_ids(160, 2), cfg, progress=False)


def test_files_and_numbers(results, tmp_path):
    out = write_report(results, tmp_path / "rep")
    names = {p.name for p in out.iterdir()}
    assert {"results.json", "report.html", "summary.md", "entropy_histograms.png", "k_distribution.png",
            "layer_heatmap.png", "expert_usage.png"} <= names
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img" in html and 'src="' not in html.replace("src='data", "")
    r = json.loads((out / "results.json").read_text())
    for value in (r["baseline"]["ppl"], r["calibrated"]["ppl"], r["calibrated"]["average_k"],
                  r["entropy_distribution"]["evaluation"]["pooled"]["mean"],
                  r["threshold_sensitivity"][1]["ppl"], r["token_characteristics"]["low_k"]["mean_loss"]):
        assert f"<td>{fmt(value)}</td>" in html
    md = (out / "summary.md").read_text()
    assert fmt(r["baseline"]["ppl"]) in md and "![pareto]" not in md
    assert md.splitlines()[2].startswith("**Summary.** Recommended:") and "Summary.</b> Recommended:" in html
    assert "Mann-Whitney" in md and r["token_characteristics"]["claims"][0]["text"] in md
    assert {c["verdict"] for c in r["token_characteristics"]["claims"]} <= {"supported", "contradicted", "inconclusive"}
    assert load_results(out)["meta"] == r["meta"]


def test_html_numbers_come_from_json(results, tmp_path):
    fake = json.loads(json.dumps(results))
    fake["baseline"]["ppl"] = 12345.678
    out = write_report(fake, tmp_path / "fake")
    assert "<td>12345.678</td>" in (out / "report.html").read_text()


def test_overwrite_and_unwritable(results, tmp_path):
    out = write_report(results, tmp_path / "rep")
    write_report(results, out)  # replaces in place
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ReportError, match="cannot"):
        write_report(results, blocker / "rep")
    with pytest.raises(ReportError, match="no results"):
        load_results(tmp_path / "nothing")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"meta": {}}))
    with pytest.raises(ReportError, match="lack"):
        load_results(bad)
    assert not [p for p in tmp_path.iterdir() if re.match(r"\.", p.name)]

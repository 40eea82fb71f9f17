"""``--budget-scope`` on the CLI: the held-out estimate printed and recorded next to the
calibration one, shown again by ``evaluate --policy``, and a bad scope refused naming the choices."""

from __future__ import annotations

import json

import pytest
from calibrate.helpers import random_text, saved_tiny_model

from adaptk.calibrate import BUDGET_SCOPES, quality_summary
from adaptk.cli.args import BUDGET_SCOPES as CLI_SCOPES
from adaptk.cli.main import main

CAL = ["--strategy", "quality", "--max-ppl-increase", "1%", "--window", "32", "--max-tokens", "384",
       "--quality-tokens", "192", "--max-passes", "12", "--no-progress"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    text = d / "text.txt"
    text.write_text(random_text(1500))
    return saved_tiny_model(d / "model"), str(text)


def test_the_cli_offers_the_scopes_calibrate_knows():
    assert CLI_SCOPES == BUDGET_SCOPES


def test_calibrate_prints_and_records_the_heldout_estimate(saved, tmp_path, capsys):
    model, text = saved
    pol = tmp_path / "p.json"
    assert main(["calibrate", "--model", model, "--text-file", text, *CAL, "--out", str(pol)]) == 0
    printed = capsys.readouterr().out
    m = json.loads(pol.read_text())["calibration"]["measured"]
    assert m["budget_scope"] == "heldout" and m["margin"] >= 0
    assert quality_summary(m) in printed
    assert f"held-out estimate {m['heldout_estimate']:.4f}" in printed and "on the calibration tokens" in printed
    assert main(["evaluate", "--model", model, "--text-file", text, "--policy", str(pol), "--sections", "",
                 "--calib-tokens", "128", "--eval-tokens", "96", "--window", "32", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 0
    assert f"held-out estimate {m['heldout_estimate']:.4f}" in capsys.readouterr().out


def test_calibration_scope_prints_no_heldout_estimate(saved, tmp_path, capsys):
    model, text = saved
    pol = tmp_path / "p.json"
    assert main(["calibrate", "--model", model, "--text-file", text, *CAL, "--budget-scope", "calibration",
                 "--out", str(pol)]) == 0
    printed = capsys.readouterr().out
    assert "on the calibration tokens" in printed and "held-out" not in printed
    assert "budget_scope" not in json.loads(pol.read_text())["calibration"]["targets"]


def test_a_bad_scope_is_refused_naming_the_choices(saved, capsys):
    model, text = saved
    with pytest.raises(SystemExit) as info:
        main(["calibrate", "--model", model, "--text-file", text, *CAL, "--budget-scope", "everywhere"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "everywhere" in err and "heldout" in err and "calibration" in err

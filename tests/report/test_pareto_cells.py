"""docs/scripts/pareto_cells.py: the docs' side-by-side table from a results.json, bold where the
interval of the difference to the column's lowest rule holds 0."""

from __future__ import annotations

import json

from doc_scripts import run_doc_script


def test_pareto_cells(tmp_path, monkeypatch, capsys):
    row = lambda rule, f, inc, lo, hi: {"rule": rule, "budget_fraction": f, "target_avg_k": 2 * f, "eval_avg_k": 2 * f,
                                        "ppl_increase": inc, "ppl_increase_lo": lo, "ppl_increase_hi": hi}
    r = {"pareto": {"fractions": [0.75], "rows": [
        {"rule": "fixed_k", "budget_fraction": 1.0, "target_avg_k": 2.0, "eval_avg_k": 2.0, "ppl_increase": 0.0},
        row("a", 0.75, 0.011, 0.008, 0.014), row("b", 0.75, 0.02, 0.015, 0.025), row("c", 0.75, 0.012, 0.009, 0.015),
        {"rule": "always_k-1", "budget_fraction": 0.5, "target_avg_k": 1.0, "eval_avg_k": 1.0, "ppl_increase": 0.09}],
        "comparisons": [{"budget_fraction": 0.75, "best": "a", "other": "b", "distinguishable": True},
                        {"budget_fraction": 0.75, "best": "a", "other": "c", "distinguishable": False}]}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(r))
    lines = run_doc_script("pareto_cells.py", [str(path)], monkeypatch, capsys)
    assert lines[0] == "| rule | 75% of native k |"
    assert lines[2] == "| a | **+1.10% [0.80, 1.40] (k 1.500)** |"
    assert lines[3] == "| b | +2.00% [1.50, 2.50] (k 1.500) |"
    assert lines[4].startswith("| c | **+1.20%")
    assert lines[-1] == "Other points: always_k-1: +9.00% at k 1.000."

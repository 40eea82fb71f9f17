"""docs/scripts/pareto_cells.py: the docs' side-by-side table from a results.json, bold where the
interval of the difference to the column's lowest rule holds 0."""

from __future__ import annotations

import json

import pytest
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


def test_pareto_cells_two_seeds(tmp_path, monkeypatch, capsys):
    """Two seeds: a column per budget and seed, bold per seed, and what holds in both."""
    def row(rule, inc, f=0.75):
        return {"rule": rule, "budget_fraction": f, "target_avg_k": 2 * f, "eval_avg_k": 2 * f * 1.004,
                "ppl": 100 * (1 + inc), "ppl_increase": inc, "ppl_increase_lo": inc - 0.002,
                "ppl_increase_hi": inc + 0.002}

    def result(a, b, c, a_vs_c):
        return {"baseline": {"ppl": 100.0}, "pareto": {"fractions": [0.75], "rows": [
            row("a", a), row("b", b), row("c", c),
            {"rule": "always_k-1", "budget_fraction": 0.5, "target_avg_k": 1.0, "eval_avg_k": 1.0,
             "ppl_increase": 0.09}],
            "comparisons": [{"budget_fraction": 0.75, "best": "a" if a < c else "c", "other": "b",
                             "distinguishable": True},
                            {"budget_fraction": 0.75, "best": "a" if a < c else "c", "other": "c" if a < c else "a",
                             "distinguishable": a_vs_c}]}}
    paths = []
    for i, r in enumerate([result(0.01, 0.03, 0.012, False), result(0.02, 0.04, 0.011, True)]):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(r))
    lines = run_doc_script("pareto_cells.py", [*map(str, paths), "--labels", "s0,s1"], monkeypatch, capsys)
    assert lines[0] == "| rule | 75%, s0 | 75%, s1 |"
    assert lines[2] == "| a | **+1.00% [0.80, 1.20]** | +2.00% [1.80, 2.20] |"
    assert lines[3] == "| b | +3.00% [2.80, 3.20] | +4.00% [3.80, 4.20] |"
    assert lines[4] == "| c | **+1.20% [1.00, 1.40]** | **+1.10% [0.90, 1.30]** |"
    assert "Native perplexity: s0 100.00, s1 100.00. Largest average-k mismatch to the target: s0 0.40%, s1 0.40%." \
        in lines
    assert "Other points, s1: always_k-1: +9.00% at k 1.000." in lines
    assert lines[-1] == ("- 75% of native k: lowest a (s0), c (s1); in the lowest group in every seed: c; "
                         "worse than the lowest in every seed: b.")
    with pytest.raises(SystemExit):
        run_doc_script("pareto_cells.py", [*map(str, paths), "--labels", "s0"], monkeypatch, capsys)

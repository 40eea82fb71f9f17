"""docs/scripts/train_rows.py: docs/train.md's preset table from train_summary.json files."""

from __future__ import annotations

import json
import shutil

from doc_scripts import run_doc_script

from adaptk.assets import default_model_path


def test_train_rows_from_summaries(tmp_path, monkeypatch, capsys):
    new = tmp_path / "new"
    shutil.copytree(default_model_path(), new, ignore=shutil.ignore_patterns("*.safetensors"))
    old = tmp_path / "old"
    old.mkdir()
    s = json.loads((new / "train_summary.json").read_text())
    legacy = {k: v for k, v in s.items() if k not in ("heldout", "routing_eval", "test_ppl")}
    legacy["valid_ppl"] = 15.0
    (old / "train_summary.json").write_text(json.dumps(legacy))
    lines = run_doc_script("train_rows.py", [str(new), str(old)], monkeypatch, capsys)
    assert lines[0].startswith("| preset | seed | params (active) | valid ppl (spread) | test ppl (spread) |")
    assert lines[0].endswith("| layer 3 |") and lines[1] == "|---" * 11 + "|"
    v, t = s["heldout"]["valid"], s["heldout"]["test"]
    assert lines[2] == (f"| `mixtral-mini` | 0 | 3.61M (1.84M) | {v['ppl']:.2f} [{v['ppl_lo']:.2f}, {v['ppl_hi']:.2f}] | "
                        f"{t['ppl']:.2f} [{t['ppl_lo']:.2f}, {t['ppl_hi']:.2f}] | 15.13 | 0 | 0.69 / 1.56 | 0.59 / 1.40 | "
                        "0.62 / 1.69 | 0.59 / 1.58 |")
    assert lines[3].startswith("| `mixtral-mini` | 0 | 3.61M (1.84M) | - | - | 15.00 | 0 |")

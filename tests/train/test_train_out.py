"""``adaptk train --out``: --overwrite on a folder adaptk did not write keeps every unrelated file;
re-running into an earlier run's folder replaces only that run's files."""

from __future__ import annotations

import json

import pytest

from adaptk.cli.main import main
from adaptk.outputs import MARKER, read_marker
from adaptk.train import OutputExistsError, train


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_overwrite_on_a_foreign_folder_keeps_unrelated_files(tmp_path, tiny_cfg):
    out = tmp_path / "m"
    (out / "checkpoints").mkdir(parents=True)
    (out / "thesis.txt").write_text("four years")
    (out / "checkpoints" / "mine.txt").write_text("my own checkpoint notes")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train(tiny_cfg())
    train(tiny_cfg(overwrite=True))
    t = tree(out)
    assert t["thesis.txt"] == b"four years" and t["checkpoints/mine.txt"] == b"my own checkpoint notes"
    assert "model.safetensors" in t and "checkpoints/last.pt" not in t
    marker = read_marker(out)
    assert marker["kind"] == "train-run" and "model.safetensors" in marker["files"]
    assert "thesis.txt" not in marker["files"] and "checkpoints/mine.txt" not in marker["files"]


def test_rerun_into_an_earlier_run_replaces_only_its_files(tmp_path, tiny_cfg):
    out = train(tiny_cfg())
    steps = [json.loads(x)["step"] for x in (out / "health.jsonl").read_text().splitlines()]
    (out / "notes.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="already holds an adaptk train-run.*--overwrite.*--resume"):
        train(tiny_cfg())  # a trained model is never replaced without --overwrite
    marker = json.loads((out / MARKER).read_text())
    (out / "stale.bin").write_text("from the earlier run")
    (out / MARKER).write_text(json.dumps({**marker, "files": [*marker["files"], "stale.bin"]}))
    train(tiny_cfg(overwrite=True))
    assert (out / "notes.txt").read_text() == "keep" and not (out / "stale.bin").exists()
    again = [json.loads(x)["step"] for x in (out / "health.jsonl").read_text().splitlines()]
    assert again == steps  # the health log was replaced, not appended to


def test_cli_train_refuses_a_file_as_out(tmp_path, capsys):
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert main(["train", "--out", str(f), "--overwrite", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and f.read_text() == "x"

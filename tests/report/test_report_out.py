"""``adaptk report`` / ``adaptk evaluate`` never destroy what is in --out, and bad results are one
clear line (the CLI, in-process)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from calibrate.helpers import random_ids, saved_tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_model

from adaptk.cli.main import main
from adaptk.evaluate import EvaluateConfig, run_evaluation
from adaptk.outputs import MARKER, TMP_TAG


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def results_json(tmp_path_factory) -> Path:
    cfg = EvaluateConfig(calib_tokens=96, eval_tokens=96, match_tokens=64, window=32, stride=16, sections=(),
                         alphas=(0.5,))
    r = run_evaluation(tiny_model("mixtral"), random_ids(96, 1), random_ids(96, 2), cfg, progress=False)
    p = tmp_path_factory.mktemp("res") / "results.json"
    p.write_text(json.dumps(r))
    return p


def _one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("adaptk report: error:") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_report_keeps_a_folder_it_did_not_write(results_json, tmp_path, capsys):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "thesis.txt").write_text("four years")
    assert main(["report", str(results_json), "--out", str(out)]) == 2
    _one_line_error(capsys, str(out), "--overwrite")
    assert tree(out) == {"thesis.txt": b"four years"}
    assert main(["report", str(results_json), "--out", str(out), "--overwrite"]) == 0
    assert (out / "thesis.txt").read_text() == "four years" and (out / "report.html").is_file()


def test_report_refuses_current_folder_model_folder_and_a_file(results_json, tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "notes.md").write_text("x")
    monkeypatch.chdir(cwd)
    assert main(["report", str(results_json), "--out", "."]) == 2
    _one_line_error(capsys, "--overwrite")
    assert sorted(p.name for p in cwd.iterdir()) == ["notes.md"]

    model = Path(saved_tiny_model(tmp_path / "model"))
    capsys.readouterr()  # saving prints a progress bar
    before = tree(model)
    assert main(["report", str(results_json), "--out", str(model)]) == 2
    _one_line_error(capsys, str(model))
    assert tree(model) == before

    f = tmp_path / "some_file.txt"
    f.write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert main(["report", str(results_json), "--out", str(f), *extra]) == 2
        _one_line_error(capsys, "is a file, not a folder")
    assert f.read_text() == "mine"


def test_report_rerun_replaces_only_its_own_files(results_json, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(results_json), "--out", str(out)]) == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["kind"] == "report" and "report.html" in marker["files"]
    (out / "old_plot.png").write_text("from an earlier adaptk version")
    (out / MARKER).write_text(json.dumps({**marker, "files": [*marker["files"], "old_plot.png"]}))
    (out / "my_notes.txt").write_text("keep")
    assert main(["report", str(results_json), "--out", str(out)]) == 0
    assert not (out / "old_plot.png").exists() and (out / "my_notes.txt").read_text() == "keep"
    assert (out / "report.html").is_file()


@pytest.mark.parametrize("bad", [
    {"layerwise": "not a list"},
    {"baseline": []},
    {"meta": {"model": 3}},
    {"calibrated": {"ppl": "high"}},
    [1, 2],
])
def test_report_on_malformed_results_is_one_line(results_json, tmp_path, capsys, bad):
    data = json.loads(results_json.read_text())
    if isinstance(bad, dict):
        for k, v in bad.items():
            data[k] = {**data[k], **v} if isinstance(v, dict) and k == "calibrated" else v
    else:
        data = bad
    p = tmp_path / "results.json"
    p.write_text(json.dumps(data))
    assert main(["report", str(p), "--out", str(tmp_path / "rep")]) == 2
    _one_line_error(capsys, str(p))
    assert not (tmp_path / "rep").exists()


def test_evaluate_checks_out_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import adaptk.loading.model as io

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(io, "load_model_and_tokenizer", no_model)
    out = tmp_path / "rep"
    out.mkdir()
    (out / "thesis.txt").write_text("x")
    assert main(["evaluate", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adaptk evaluate: error:") and "--overwrite" in err and len(err.splitlines()) == 1
    assert tree(out) == {"thesis.txt": b"x"}


NAMES = st.sampled_from(["results.json", "report.html", "summary.md", "k_distribution.png", MARKER,
                         "thesis.txt", "sub"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(st.lists(NAMES, min_size=1, max_size=2), st.booleans(), st.binary(max_size=6)),
                        max_size=5),
       target=st.sampled_from([(), ("sub",), ("thesis.txt",), ("fresh",)]), overwrite=st.booleans())
def test_property_report_cli_never_touches_foreign_files(results_json, tmp_path_factory, entries, target,
                                                         overwrite):
    """Whatever the folder holds, ``adaptk report`` changes no file it did not write, except
    same-named files under --overwrite; it exits 0 or 2, never with a traceback."""
    root = tmp_path_factory.mktemp("cli")
    for parts, is_dir, data in entries:
        p = root.joinpath(*parts)
        if p.exists() or any(a.is_file() for a in p.parents):
            continue
        if is_dir:
            p.mkdir(parents=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    before = tree(root)
    dest = root.joinpath(*target)
    rc = main(["report", str(results_json), "--out", str(dest), *(["--overwrite"] if overwrite else [])])
    assert rc in (0, 2)
    after = tree(root)
    replaced = set()
    if overwrite and rc == 0:  # same-named files replaced under --overwrite: the ones adaptk now owns
        owned = json.loads((dest / MARKER).read_text())["files"] + [MARKER]
        replaced = {(dest / n).relative_to(root).as_posix() for n in owned}
    for path, data in before.items():
        if path not in replaced:
            assert after.get(path) == data, f"{path} was changed or deleted"
    assert not [p for p in root.rglob("*") if TMP_TAG in p.name]
    shutil.rmtree(root)


def test_report_folder_of_an_older_adaptk_is_recognised(results_json, tmp_path, capsys):
    """A report an adaptk without the marker wrote (report files only) is re-written without
    --overwrite; the same names next to a file of the user's are not."""
    old = tmp_path / "adaptk-report"
    old.mkdir()
    shutil.copy(results_json, old / "results.json")
    (old / "report.html").write_text("old")
    (old / "pareto.png").write_bytes(b"old plot this run does not make")
    assert main(["report", str(old / "results.json"), "--out", str(old)]) == 0
    assert (old / "report.html").read_text() != "old" and not (old / "pareto.png").exists()
    assert json.loads((old / MARKER).read_text())["kind"] == "report"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(results_json, mixed / "results.json")
    (mixed / "thesis.txt").write_text("x")
    assert main(["report", str(results_json), "--out", str(mixed)]) == 2
    _one_line_error(capsys, "--overwrite")
    assert sorted(p.name for p in mixed.iterdir()) == ["results.json", "thesis.txt"]

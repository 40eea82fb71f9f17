"""``adaptk bench --out``: checked before the (long) run; bench.json/bench.md only go into a new,
empty or adaptk bench folder, unless --overwrite, which never deletes anything else."""

from __future__ import annotations

import pytest

import adaptk.bench as bench
from adaptk.bench.report import write
from adaptk.cli.main import main
from adaptk.outputs import OutputExistsError


def test_bench_out_is_checked_before_the_run(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the bench ran before --out was checked")

    monkeypatch.setattr(bench, "run_bench", boom)
    out = tmp_path / "results"
    out.mkdir()
    (out / "thesis.txt").write_text("x")
    assert main(["bench", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adaptk bench: error:") and "--overwrite" in err and len(err.splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["thesis.txt"]


def test_bench_write_keeps_foreign_files(tmp_path, monkeypatch):
    monkeypatch.setattr("adaptk.bench.report.render_markdown", lambda r: "# md\n")
    out = tmp_path / "b"
    out.mkdir()
    (out / "thesis.txt").write_text("x")
    (out / "bench.md").write_text("user's")
    with pytest.raises(OutputExistsError):
        write({"a": 1}, out)
    assert (out / "bench.md").read_text() == "user's"
    jpath, mpath = write({"a": 1}, out, overwrite=True)
    assert mpath.read_text() == "# md\n" and jpath.is_file() and (out / "thesis.txt").read_text() == "x"
    write({"a": 2}, out)  # an adaptk bench folder now

"""adaptk.outputs: no write ever deletes or changes a file adaptk did not write (except same-named
files under an explicit overwrite), refusals are clear, writes are atomic and stale temps are cleaned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptk import outputs as O
from adaptk.errors import AdaptkError
from adaptk.outputs import MARKER, OutputError, OutputExistsError
from adaptk.outputs import temps as OT
from adaptk.outputs import write as OW

FILES = {"results.json": "{}", "report.html": "<html>", "plot.png": b"\x89PNG"}


def _is_own(p: Path) -> bool:
    return json.loads(p.read_text()).get("format") == "test-kind"


OWN_FILE = json.dumps({"format": "test-kind", "n": 1})


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), adaptk's marker included."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_foreign_folder_is_refused_and_kept(tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "thesis.txt").write_text("four years of work")
    with pytest.raises(OutputExistsError, match=r"rep.*did not write.*thesis\.txt.*--overwrite") as err:
        O.write_folder(out, "report", FILES)
    assert isinstance(err.value, AdaptkError)
    assert tree(out) == {"thesis.txt": b"four years of work"}


def test_current_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "notes.md").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        O.write_folder(".", "report", FILES)
    assert sorted(os.listdir(tmp_path)) == ["notes.md"]


def test_file_where_folder_expected_and_folder_where_file_expected(tmp_path):
    f = tmp_path / "some_file.txt"
    f.write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="is a file, not a folder"):
            O.write_folder(f, "report", FILES, overwrite=overwrite)
        with pytest.raises(OutputError, match="is a folder, not a file"):
            O.write_file(tmp_path, "{}", "policy", _is_own, overwrite=overwrite)
    assert f.read_text() == "mine"
    with pytest.raises(OutputError, match="is a file, not a folder"):
        O.write_file(f / "p.json", "{}", "policy", _is_own)  # not "File exists"
    assert sorted(os.listdir(tmp_path)) == ["some_file.txt"]


def test_overwrite_into_a_foreign_folder_replaces_same_named_only(tmp_path):
    out = tmp_path / "rep"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.txt").write_text("keep")
    (out / "sub" / "data.csv").write_text("keep too")
    (out / "report.html").write_text("user's own report.html")
    O.write_folder(out, "report", FILES, overwrite=True)
    t = tree(out)
    assert t["thesis.txt"] == b"keep" and t["sub/data.csv"] == b"keep too"
    assert t["report.html"] == b"<html>" and t["plot.png"] == b"\x89PNG"
    assert json.loads(t[MARKER])["files"] == sorted(FILES)
    O.write_folder(out, "report", {"results.json": "{}"})  # now adaptk's: no flag needed
    assert not (out / "report.html").exists() and not (out / "plot.png").exists()
    assert (out / "thesis.txt").read_text() == "keep" and (out / "sub" / "data.csv").exists()


def test_rewrite_of_own_folder_removes_only_its_own_stale_files(tmp_path):
    out = O.write_folder(tmp_path / "rep", "report", FILES)
    (out / "later.txt").write_text("the user added this")
    O.write_folder(out, "report", {"results.json": "[1]", "new.png": b"p"})
    assert tree(out) == {"results.json": b"[1]", "new.png": b"p", "later.txt": b"the user added this",
                         MARKER: (out / MARKER).read_bytes()}
    assert O.read_marker(out)["files"] == ["new.png", "results.json"]


def test_marker_cannot_reach_outside_the_folder(tmp_path):
    out = O.write_folder(tmp_path / "rep", "report", FILES)
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    (out / MARKER).write_text(json.dumps({"format": O.MARKER_FORMAT, "kind": "report",
                                          "files": ["../victim.txt", str(victim), "results.json"]}))
    O.write_folder(out, "report", {"report.html": "h"})
    assert victim.read_text() == "x" and not (out / "results.json").exists()


def test_other_kind_is_refused_and_its_marker_kept_under_overwrite(tmp_path):
    out = O.write_folder(tmp_path / "b", "bench", {"bench.json": "{}"})
    with pytest.raises(OutputExistsError, match="adaptk bench output, not a report"):
        O.write_folder(out, "report", FILES)
    O.write_folder(out, "report", FILES, overwrite=True)
    assert O.read_marker(out)["kind"] == "bench" and O.read_marker(out)["files"] == ["bench.json"]
    assert (out / "bench.json").read_text() == "{}"


def test_own_folder_needs_overwrite_when_not_reusable(tmp_path):
    out = O.write_folder(tmp_path / "run", "train-run", {"model.bin": b"w"})
    with pytest.raises(OutputExistsError, match="already holds an adaptk train-run.*--overwrite"):
        O.check_folder(out, "train-run", reuse_own=False)
    assert O.check_folder(out, "train-run", reuse_own=False, overwrite=True) == out.resolve()


def test_a_folder_in_the_way_of_a_file_is_refused_before_writing(tmp_path):
    out = O.write_folder(tmp_path / "rep", "report", {"results.json": "{}"})
    (out / "report.html").mkdir()
    (out / "report.html" / "inside.txt").write_text("x")
    before = tree(out)
    with pytest.raises(OutputExistsError, match="report.html is a folder"):
        O.write_folder(out, "report", FILES, overwrite=True)
    assert tree(out) == before


def test_single_file_refuses_foreign_and_replaces_own(tmp_path):
    p = tmp_path / "p.json"
    p.write_text("my notes")
    with pytest.raises(OutputExistsError, match=r"p\.json exists and is not an adaptk policy file.*--overwrite"):
        O.write_file(p, OWN_FILE, "policy", _is_own)
    assert p.read_text() == "my notes"
    O.write_file(p, OWN_FILE, "policy", _is_own, overwrite=True)
    O.write_file(p, OWN_FILE.replace("1", "2"), "policy", _is_own)  # own: replaced without the flag
    assert json.loads(p.read_text())["n"] == 2
    assert sorted(os.listdir(tmp_path)) == ["p.json"]


def test_single_file_replaces_a_symlink_not_its_target(tmp_path):
    target = tmp_path / "target.json"
    target.write_text(OWN_FILE)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    O.write_file(link, json.dumps({"format": "test-kind", "n": 7}), "policy", _is_own)
    assert target.read_text() == OWN_FILE and not link.is_symlink()


def test_checks_write_nothing(tmp_path):
    O.check_folder(tmp_path / "a" / "b", "report")
    O.check_file(tmp_path / "c" / "p.json", "policy", _is_own)
    assert list(tmp_path.iterdir()) == []


def test_checks_see_missing_permission(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(OutputError, match="no permission"):
            O.check_folder(ro / "rep", "report")
        with pytest.raises(OutputError, match="no permission"):
            O.check_file(ro / "p.json", "policy", _is_own)
    finally:
        ro.chmod(0o700)


def test_a_failed_write_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    out = O.write_folder(tmp_path / "rep", "report", FILES)
    before = tree(out)
    real, calls = OW._write_new, []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(OW, "_write_new", failing)
    with pytest.raises(OutputError, match="No space left"):
        O.write_folder(out, "report", {"results.json": "NEW", "report.html": "NEW"})
    assert tree(out) == before and sorted(p.name for p in out.iterdir()) == sorted([*FILES, MARKER])
    calls.clear()
    with pytest.raises(OutputError):
        O.write_folder(tmp_path / "x" / "new", "report", {"a.txt": "1", "b.txt": "2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # the folders it made are gone again


KILLED_WRITE = textwrap.dedent("""
    import os, signal, sys
    from adaptk import outputs as O
    real = os.replace
    def kill_on_rename(a, b):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace = kill_on_rename
    if sys.argv[1] == "folder":
        O.write_folder(sys.argv[2], "report", {"results.json": "{}"})
    else:
        O.write_file(sys.argv[2], "{}", "policy", lambda p: True)
""")


@pytest.mark.parametrize("what", ["folder", "file"])
def test_stale_temps_of_a_killed_write_are_cleaned_next_time(tmp_path, what):
    target = tmp_path / ("rep" if what == "folder" else "p.json")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(O.__file__).parents[2]),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE, what, str(target)], env=env, timeout=120)
    assert proc.returncode == -9
    where = target if what == "folder" else tmp_path
    temps = [p for p in where.iterdir() if O.TMP_TAG in p.name]
    assert temps, "the killed write should have left its temp entry"
    # a temp of a live writer (this process) and one of another host, recent, are left alone
    live = where / (OT._tmp_prefix("" if what == "folder" else target.name) + "live")
    live.mkdir()
    other = where / f".{'' if what == 'folder' else target.name + '.'}{O.TMP_TAG}-00000000-1-x"
    other.mkdir()
    if what == "folder":
        O.write_folder(target, "report", {"results.json": "{}"})
    else:
        O.write_file(target, "{}", "policy", lambda p: True)
    assert not any(p.exists() for p in temps)
    assert live.exists() and other.exists()
    os.utime(other, (time.time() - 2 * O.FOREIGN_HOST_STALE_S,) * 2)
    O.clean_stale_temps(where, "" if what == "folder" else target.name)
    assert not other.exists() and live.exists()


def test_temps_of_older_versions_are_cleaned_when_old(tmp_path):
    old_dir = tmp_path / ".rep.tmp-ab12cd34"  # report staging of adaptk <= 0.x (mkdtemp, no PID)
    old_dir.mkdir()
    old_file = tmp_path / ".adaptk-k3j4h5g6.json"  # policy temp of adaptk <= 0.x (mkstemp)
    old_file.write_text("{")
    recent = tmp_path / ".rep.tmp-zz99yy88"
    recent.mkdir()
    user = tmp_path / ".rep.old-ab12cd34"  # may hold a previous folder's contents: never touched
    user.mkdir()
    ago = time.time() - 2 * O.LEGACY_STALE_S
    for p in (old_dir, old_file, user):
        os.utime(p, (ago, ago))
    O.write_folder(tmp_path / "rep", "report", {"results.json": "{}"})
    O.write_file(tmp_path / "p.json", "{}", "policy", lambda p: True)
    assert not old_dir.exists() and not old_file.exists()
    assert recent.exists() and user.exists()


# --------------------------------------------------------------------------------- property test

NAMES = st.sampled_from(["results.json", "report.html", "plot.png", MARKER, "thesis.txt", "a", "b.md", "sub"])
ENTRY = st.tuples(st.lists(NAMES, min_size=1, max_size=3), st.booleans(), st.binary(max_size=8))


def _populate(root: Path, entries) -> None:
    for parts, is_dir, data in entries:
        p = root.joinpath(*parts)
        if any(a.exists() and not a.is_dir() for a in p.parents if root in a.parents or a == root):
            continue
        if p.exists():
            continue
        if is_dir:
            p.mkdir(parents=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(ENTRY, max_size=6), target=st.sampled_from([(), ("sub",), ("a",), ("results.json",),
                                                                     ("new", "deeper")]),
       overwrite=st.booleans(), single=st.booleans(), twice=st.booleans())
def test_property_writers_never_touch_foreign_files(tmp_path_factory, entries, target, overwrite, single, twice):
    """For any pre-existing tree and target, a write (or two) keeps every file adaptk did not write,
    byte for byte; the only exception is a same-named file under an explicit overwrite."""
    root = tmp_path_factory.mktemp("prop")
    _populate(root, entries)
    before = tree(root)
    dest = root.joinpath(*target)
    names = {"x.json": OWN_FILE} if single else FILES
    for _ in range(2 if twice else 1):
        try:
            if single:
                O.write_file(dest, names["x.json"], "test-kind", _is_own, overwrite=overwrite)
            else:
                O.write_folder(dest, "report", names, overwrite=overwrite)
        except OutputError:
            pass
    after = tree(root)
    written = {dest.relative_to(root).as_posix()} if single else {
        (dest / n).relative_to(root).as_posix() for n in [*names, MARKER]}
    for path, data in before.items():
        if path in written and (overwrite or (single and _is_own_bytes(data))):
            continue  # replaced on purpose: an explicit overwrite, or adaptk's own file
        assert after.get(path) == data, f"{path} was changed or deleted"
    assert not [p for p in root.rglob("*") if O.TMP_TAG in p.name], "a temp entry was left behind"


def _is_own_bytes(data: bytes) -> bool:
    try:
        return json.loads(data).get("format") == "test-kind"
    except Exception:
        return False


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_checks_see_a_file_system_that_refuses_new_files():
    # the permission bits of /proc say yes to root; only a write can tell, and nothing is left behind
    with pytest.raises(OutputError, match="does not accept new files"):
        O.check_folder("/proc/adaptk-nope/rep", "report")
    with pytest.raises(OutputError, match="does not accept new files"):
        O.check_file("/proc/adaptk-nope/b.json", "baseline", _is_own)


def test_the_write_probe_leaves_nothing(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    O.check_folder(tmp_path / "rep", "report")
    O.check_file(tmp_path / "p.json", "policy", _is_own)
    O.check_folder(tmp_path, "report", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]

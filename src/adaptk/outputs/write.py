"""Writing outputs: one file atomically, a folder through a staging folder, a folder filled in
place (a training run) tracked by its marker; see :mod:`adaptk.outputs`."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from adaptk.outputs.checks import (
    MARKER,
    MARKER_FORMAT,
    MARKER_VERSION,
    OutputError,
    OutputExistsError,
    _safe_relpath,
    check_file,
    check_folder,
    folder_state,
    legacy_files,
    read_marker,
)
from adaptk.outputs.temps import _tmp_pattern, _tmp_prefix, _to_bytes, _write_new, clean_stale_temps

log = logging.getLogger(__name__)


LEGACY_FILE_TEMPS = (re.compile(r"\.adaptk-[a-z0-9_]{8}\.json$"),)


def write_file(path: str | os.PathLike, data: str | bytes, kind: str, is_own: Callable[[Path], bool], *,
               overwrite: bool = False, flag: str = "--out") -> Path:
    """Atomically write one file (temp file in the same folder, then rename), after ``check_file``."""
    p = check_file(path, kind, is_own, overwrite=overwrite, flag=flag)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {p.parent}: {exc.strerror or exc}") from exc
    clean_stale_temps(p.parent, p.name, LEGACY_FILE_TEMPS)
    tmp = p.parent / (_tmp_prefix(p.name) + secrets.token_hex(4))
    try:
        _write_new(tmp, _to_bytes(data))
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {kind} file {p}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def write_marker(folder: Path, kind: str, files: list[str]) -> None:
    data = {"format": MARKER_FORMAT, "version": MARKER_VERSION, "kind": kind, "files": sorted(set(files))}
    tmp = folder / (_tmp_prefix() + "marker-" + secrets.token_hex(4))  # a folder temp: cleaned with those
    try:
        _write_new(tmp, (json.dumps(data, indent=1) + "\n").encode())
        os.replace(tmp, folder / MARKER)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def legacy_folder_temps(name: str) -> tuple[re.Pattern[str], ...]:
    """Older adaptk versions staged a report folder ``NAME`` as ``.NAME.tmp-XXXXXXXX`` next to it."""
    return (re.compile(re.escape(f".{name}.tmp-") + r"[A-Za-z0-9_]{8}$"),)


def write_folder(path: str | os.PathLike, kind: str, files: Mapping[str, str | bytes], *,
                 overwrite: bool = False, flag: str = "--out") -> Path:
    """Write ``files`` (relative name -> content) into the folder ``path`` as described in the module
    docstring; returns the folder, resolved."""
    bad = [n for n in files if not _safe_relpath(n) or n.startswith(".adaptk")]
    if bad:
        raise ValueError(f"output file names must be plain relative paths, got {bad}")
    out = check_folder(path, kind, overwrite=overwrite, flag=flag)
    state = folder_state(out, kind)
    # refuse before writing anything when a same-named entry is a folder (never replaced by a file)
    for name in files:
        dest = out / name
        if dest.is_dir() and not dest.is_symlink():
            raise OutputExistsError(f"{flag} {path}: {dest} is a folder where adaptk writes its file {name}; "
                                    "move it away or choose another folder")
        if any(a.exists() and not a.is_dir() for a in list(dest.parents)[:len(Path(name).parts) - 1]):
            raise OutputExistsError(f"{flag} {path}: a file is in the way of {dest}; choose another folder")
    created = []
    try:
        probe = out
        while not probe.exists():
            created.append(probe)
            probe = probe.parent
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    clean_stale_temps(out)
    clean_stale_temps(out.parent, "", legacy_folder_temps(out.name), current=False)  # older versions' only
    old = read_marker(out) if state == "own" else None
    old_files = old["files"] if old else (legacy_files(out, kind) or [] if state == "own" else [])
    track = state != "other-kind"  # another kind's marker is left as it is
    stage = None
    try:
        stage = out / (_tmp_prefix() + secrets.token_hex(4))
        stage.mkdir()
        for name, data in files.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            _write_new(stage / name, _to_bytes(data))
        if track:
            write_marker(out, kind, [*old_files, *files])
        for name in files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, out / name)
        if track:
            write_marker(out, kind, list(files))
    except OSError as exc:
        _cleanup(stage, created)
        raise OutputError(f"cannot write {kind} to {out}: {exc.strerror or exc}") from exc
    except BaseException:
        _cleanup(stage, created)
        raise
    _cleanup(stage, [])
    remove_stale_own(out, old_files, set(files))
    return out


def remove_stale_own(out: Path, old_files: list[str], keep: set[str]) -> None:
    """Remove the files of a previous adaptk write (``old_files``, from its marker) not in ``keep``."""
    for name in old_files:
        if name in keep:
            continue
        p = out / name
        if p.is_file() or p.is_symlink():
            try:
                p.unlink()
                log.info("removed %s: written by an earlier adaptk run, not by this one", p)
            except OSError as exc:
                log.warning("cannot remove old adaptk file %s: %s", p, exc)


def _cleanup(stage: Path | None, created: list[Path]) -> None:
    if stage is not None:
        shutil.rmtree(stage, ignore_errors=True)
    for d in created:  # folders this write made, innermost first, if still empty
        try:
            d.rmdir()
        except OSError:
            break


# ------------------------------------------------------------------------- folders written in place

def prepare_folder(path: str | os.PathLike, kind: str, *, overwrite: bool = False, reuse_own: bool = True,
                   flag: str = "--out") -> tuple[Path, dict[str, tuple[int, int, int]]]:
    """For a folder that others fill in place (a training run): check, create, clean stale temps and
    the files a previous run of this kind listed, and return the folder and a snapshot of what it
    holds, for :func:`finish_folder`."""
    out = check_folder(path, kind, overwrite=overwrite, reuse_own=reuse_own, flag=flag)
    state = folder_state(out, kind)
    marker = read_marker(out) if state == "own" else None
    try:
        out.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out)
        if marker:
            remove_stale_own(out, marker["files"], set())
        if state != "other-kind":  # recognisable as adaptk's from the start (a run stopped early, killed)
            write_marker(out, kind, [])
    except OSError as exc:
        raise OutputError(f"cannot prepare output folder {out}: {exc.strerror or exc}") from exc
    return out, snapshot(out)


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Relative path -> (inode, size, mtime_ns) of every file under ``folder``."""
    snap = {}
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            p = Path(dirpath) / n
            try:
                st = p.lstat()
            except OSError:
                continue
            snap[p.relative_to(folder).as_posix()] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return snap


def finish_folder(out: Path, kind: str, before: dict[str, tuple[int, int, int]]) -> list[str]:
    """Record in the marker the files written since ``before`` (new or changed), added to those it
    already lists; returns them all. In another kind's adaptk folder the marker is left alone."""
    if folder_state(out, kind) == "other-kind":
        return []
    marker = read_marker(out)
    now = snapshot(out)
    mine = {n for n, st in now.items() if n != MARKER and before.get(n) != st
            and not _tmp_pattern().match(Path(n).parts[0])}
    mine |= {n for n in (marker["files"] if marker and marker["kind"] == kind else []) if n in now}
    mine = sorted(mine)
    write_marker(out, kind, mine)
    return mine

"""Safe outputs: every file or folder adaptk writes goes through here, so no command ever deletes or
replaces what the user owns.

Folder outputs (a report, a bench result, a training run)
    A folder is written only if it is new, empty, or already an adaptk output folder of the same
    kind, recognised by the marker file ``.adaptk-output.json`` that the writer puts there
    (``{"format": "adaptk-output", "kind": ..., "files": [...]}``, the files adaptk wrote). In such a
    folder adaptk replaces only the files it writes and removes only files its marker lists from a
    previous write that the new write no longer produces. Any other folder (or an adaptk folder of
    another kind) is refused with :class:`OutputExistsError` naming the path and ``--overwrite``.
    With ``overwrite=True`` adaptk writes its files into such a folder, replacing same-named files
    only and deleting nothing else; in a foreign folder it then writes its marker, in another kind's
    adaptk folder it leaves that marker as it is (so the other kind's files stay tracked).
    Some kinds (a training run, which holds a model) set ``reuse_own=False``: even their own folder
    needs ``overwrite=True``. A folder an adaptk before the marker wrote counts as its own when a
    recogniser registered for the kind (:func:`register_legacy`) finds nothing but that kind's files.

    Each file is first written in full into a staging folder ``.adaptk-tmp-<host>-<pid>-<random>``
    inside the target folder (same file system), then renamed into place one by one. A failure
    while writing (disk full, an exception, Ctrl-C) leaves the target exactly as it was; only the
    renames, which cannot run out of space, are not all-or-nothing. The marker is first written
    listing the old and the new files together, so even a kill among the renames leaves every file
    adaptk wrote recognisable as adaptk's.

Single-file outputs (a policy file, a routing baseline)
    An existing file is replaced only if ``is_own(path)`` recognises it by its content as an adaptk
    file of the same kind, or with ``overwrite=True``. The data goes to a temp file
    ``.<name>.adaptk-tmp-<host>-<pid>-<random>`` in the same folder, which is then renamed over the
    target: never a partial file. A folder where a file is expected, or a file where a folder is
    expected, is always refused.

Stale temp entries
    A write killed with SIGKILL leaves its temp entry behind. The next write to the same target
    removes the entries named like adaptk's own temps whose writer is gone: the name carries the
    host (a short hash) and the PID, and an entry is stale when it was made on this host by a PID
    that is no longer alive (a PID reused by an unrelated process only keeps the entry longer; it
    never deletes a live write), or, from another host (a shared file system, where the PID cannot
    be checked), when it is older than a day. Entries of older adaptk versions, which carry no PID
    (``.NAME.tmp-XXXXXXXX`` folders next to a report, ``.adaptk-XXXXXXXX.json`` next to a policy
    file), are removed when older than an hour: no write takes that long.

``check_folder`` / ``check_file`` validate a destination (kind, marker, existing entries, a parent
that can be created and written) without writing anything; commands call them before any model
loading or long computation. This module uses only the standard library and :mod:`adaptk.errors`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from adaptk.errors import AdaptkError

log = logging.getLogger(__name__)

MARKER = ".adaptk-output.json"
MARKER_FORMAT = "adaptk-output"
MARKER_VERSION = 1
TMP_TAG = "adaptk-tmp"
FOREIGN_HOST_STALE_S = 24 * 3600
LEGACY_STALE_S = 3600


class OutputError(AdaptkError, OSError):
    """An output path that cannot be written (a file where a folder is expected, no permission, ...)."""


class OutputExistsError(OutputError, FileExistsError):
    """The output exists, is not adaptk's own of the same kind, and --overwrite was not given."""


# ---------------------------------------------------------------------------------------- temp names

def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _tmp_prefix(name: str = "") -> str:
    """``.adaptk-tmp-<host>-<pid>-`` (a folder's staging) or ``.<name>.adaptk-tmp-<host>-<pid>-``."""
    return f".{name + '.' if name else ''}{TMP_TAG}-{_host_tag()}-{os.getpid()}-"


def _tmp_pattern(name: str = "") -> re.Pattern[str]:
    lead = re.escape(f".{name}.") if name else r"\."
    return re.compile(lead + re.escape(TMP_TAG) + r"-([0-9a-f]{8})-(\d+)-[A-Za-z0-9_-]+$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or a PID we cannot ask about): assume alive
    return True


def _age_s(p: Path) -> float:
    try:
        return time.time() - p.lstat().st_mtime
    except OSError:
        return 0.0


def _is_stale(entry: Path, pattern: re.Pattern[str]) -> bool:
    m = pattern.match(entry.name)
    if not m:
        return False
    if m.group(1) == _host_tag():
        return not _pid_alive(int(m.group(2)))
    return _age_s(entry) > FOREIGN_HOST_STALE_S


def _remove(entry: Path) -> None:
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        log.info("removed stale adaptk temp entry %s", entry)
    except OSError as exc:
        log.warning("cannot remove stale adaptk temp entry %s: %s", entry, exc)


def clean_stale_temps(folder: Path, name: str = "", legacy: tuple[re.Pattern[str], ...] = (), *,
                      current: bool = True) -> list[Path]:
    """Remove adaptk's own stale temp entries in ``folder`` (those of target ``name``, or a folder's
    staging when ``name`` is empty; none with ``current=False``), and entries of older versions
    matching ``legacy`` patterns that are older than an hour. Returns what was removed."""
    pattern = _tmp_pattern(name) if current else re.compile(r"(?!)")
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if _is_stale(entry, pattern) or (any(p.match(entry.name) for p in legacy)
                                         and _age_s(entry) > LEGACY_STALE_S):
            _remove(entry)
            removed.append(entry)
    return removed


# -------------------------------------------------------------------------------------- path checks

def _flag_hint(overwrite_flag: str) -> str:
    return f"pass {overwrite_flag} to" if overwrite_flag else "use overwrite=True to"


def _check_creatable(path: Path, what: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a folder we can write in."""
    anc = path.parent
    while not anc.exists():
        if anc.is_symlink():
            raise OutputError(f"cannot write {what} {path}: {anc} is a broken symbolic link")
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"cannot write {what} {path}: {anc} is a file, not a folder; choose another path")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {path}: no permission to write in {anc}; choose another path")


def read_marker(folder: Path) -> dict | None:
    """The folder's adaptk marker (``kind`` and ``files``), or None when there is none or it is not one."""
    p = Path(folder) / MARKER
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not (isinstance(data, dict) and data.get("format") == MARKER_FORMAT and isinstance(data.get("kind"), str)
            and isinstance(data.get("files"), list)):
        return None
    data["files"] = [f for f in data["files"] if isinstance(f, str) and _safe_relpath(f)]
    return data


def _safe_relpath(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts and name != MARKER \
        and "\\" not in name


# kind -> recogniser of a folder written by an adaptk version before the marker: the list of its
# files when every entry of the folder is such a file (recognised by name and content), else None
LEGACY: dict[str, Callable[[Path], list[str] | None]] = {}


def register_legacy(kind: str, recognise: Callable[[Path], list[str] | None]) -> None:
    LEGACY[kind] = recognise


def legacy_files(path: Path, kind: str) -> list[str] | None:
    recognise = LEGACY.get(kind)
    if recognise is None or read_marker(path) is not None:
        return None
    try:
        return recognise(path)
    except Exception:  # unreadable or unexpected content: not an old adaptk folder
        return None


def folder_state(path: Path, kind: str) -> str:
    """'new', 'empty', 'own' (an adaptk folder of ``kind``, or one an older adaptk wrote before the
    marker existed, see :func:`register_legacy`), 'other-kind' or 'foreign'."""
    if not path.exists():
        return "new"
    entries = [e for e in path.iterdir() if not _tmp_pattern().match(e.name)]  # adaptk's temps do not count
    if not entries:
        return "empty"
    marker = read_marker(path)
    if marker is None:
        return "own" if legacy_files(path, kind) is not None else "foreign"
    return "own" if marker["kind"] == kind else "other-kind"


def entries_are(path: Path, names: set[str], required: str) -> list[str] | None:
    """For legacy recognisers: the entries of ``path`` (adaptk temps aside) when all are files named
    in ``names`` and ``required`` is one of them, else None."""
    found = [e for e in path.iterdir() if not _tmp_pattern().match(e.name)]
    if all(e.is_file() and not e.is_symlink() and e.name in names for e in found) and (path / required).is_file():
        return sorted(e.name for e in found)
    return None


def check_folder(path: str | os.PathLike, kind: str, *, overwrite: bool = False, reuse_own: bool = True,
                 flag: str = "--out", overwrite_flag: str = "--overwrite") -> Path:
    """Validate a folder destination without writing anything; returns it resolved.

    Raises :class:`OutputExistsError` when the folder holds anything that is not adaptk's own
    ``kind`` output (unless ``overwrite``), :class:`OutputError` when the path is a file, or the
    folder cannot be created or written."""
    raw = Path(path)
    out = raw.resolve()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{flag} {raw} is a file, not a folder; adaptk never replaces it by a folder: "
                          "choose a folder path")
    if not out.exists():
        _check_creatable(out, "output folder")
        return out
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in output folder {raw}: no permission; choose another {flag}")
    state = folder_state(out, kind)
    if state == "empty" or (state == "own" and reuse_own) or overwrite:
        return out
    if state == "own":
        raise OutputExistsError(f"{flag} {raw} already holds an adaptk {kind}; {_flag_hint(overwrite_flag)} "
                                "replace adaptk's files in it, or choose a new folder")
    if state == "other-kind":
        other = read_marker(out)["kind"]  # type: ignore[index]
        raise OutputExistsError(f"{flag} {raw} holds an adaptk {other} output, not a {kind}; choose a new or "
                                f"empty folder, or {_flag_hint(overwrite_flag)} add the {kind} files to it "
                                "(nothing else in it is touched)")
    sample = sorted(e.name for e in out.iterdir() if not _tmp_pattern().match(e.name))[:3]
    raise OutputExistsError(
        f"{flag} {raw} is a folder that adaptk did not write (it holds {', '.join(map(repr, sample))}"
        f"{', ...' if len(sample) == 3 else ''}); choose a new or empty folder, or {_flag_hint(overwrite_flag)} "
        "write adaptk's files into it (same-named files are replaced, nothing else is touched)")


def check_file(path: str | os.PathLike, kind: str, is_own: Callable[[Path], bool], *, overwrite: bool = False,
               flag: str = "--out", overwrite_flag: str = "--overwrite") -> Path:
    """Validate a single-file destination without writing anything; returns it (not resolved, so that
    a symbolic link is replaced, never the file it points to)."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{flag} {p} is a folder, not a file; choose a file path (e.g. {p / ('adaptk-' + kind + '.json')})")
    if not p.exists() and not p.is_symlink():
        _check_creatable(p, f"{kind} file")
        return p
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot replace {p}: no permission to write in {p.parent}; choose another {flag}")
    if overwrite or (p.is_file() and _safe_is_own(is_own, p)):
        return p
    raise OutputExistsError(f"{flag} {p} exists and is not an adaptk {kind} file; choose another path, or "
                            f"{_flag_hint(overwrite_flag)} replace it")


def _safe_is_own(is_own: Callable[[Path], bool], p: Path) -> bool:
    try:
        return bool(is_own(p))
    except Exception:  # a recogniser that cannot read the file: not ours
        return False


def json_is_own(test: Callable[[dict], bool]) -> Callable[[Path], bool]:
    """An ``is_own`` recogniser for JSON files: the file parses to a dict for which ``test`` is true."""
    def is_own(p: Path) -> bool:
        data = json.loads(p.read_text(encoding="utf-8"))
        return isinstance(data, dict) and bool(test(data))
    return is_own


# ------------------------------------------------------------------------------------------- writes

def _to_bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _default_mode(executable: bool = False) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if executable else 0o666) & ~mask


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


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

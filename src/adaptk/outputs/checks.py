"""Checking an output destination without writing: the marker, the kinds, old adaptk folders, and
the refusals; see :mod:`adaptk.outputs`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from adaptk.errors import AdaptkError
from adaptk.outputs.temps import _tmp_pattern

MARKER = ".adaptk-output.json"
MARKER_FORMAT = "adaptk-output"
MARKER_VERSION = 1


class OutputError(AdaptkError, OSError):
    """An output path that cannot be written (a file where a folder is expected, no permission, ...)."""


class OutputExistsError(OutputError, FileExistsError):
    """The output exists, is not adaptk's own of the same kind, and --overwrite was not given."""


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
    _probe(anc, f"cannot write {what} {path}")


def _probe(folder: Path, what: str) -> None:
    """Create and remove an empty temp file in ``folder``: the permission bits say yes to root and
    on read-only or virtual file systems (/proc, a read-only mount), where only a write can tell."""
    try:
        fd, name = tempfile.mkstemp(prefix=".adaptk-probe-", dir=folder)
    except OSError as e:
        raise OutputError(f"{what}: {folder} does not accept new files ({e.strerror}); choose another path") from None
    os.close(fd)
    os.unlink(name)


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
    _probe(out, f"cannot write in output folder {raw}")
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
    _probe(p.parent, f"cannot replace {p}")
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


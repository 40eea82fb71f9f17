"""adaptk's temp entries: their names (host and PID inside), the stale ones' cleanup, and the
atomic creation of a new file; see :mod:`adaptk.outputs`."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

TMP_TAG = "adaptk-tmp"
FOREIGN_HOST_STALE_S = 24 * 3600
LEGACY_STALE_S = 3600

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



def _to_bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data



def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


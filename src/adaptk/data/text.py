"""The one loader of user text files: strict UTF-8, binary files refused.

Every command that takes a ``--text-file`` reads it here, so a binary file or a file in another
encoding gets the same error everywhere (the path and the byte offset of the first bad byte),
never a silently "repaired" text that changes the results.
"""

from __future__ import annotations

import logging
from pathlib import Path

from adaptk.data.errors import TextFileError

log = logging.getLogger(__name__)


def first_bad_byte(data: bytes) -> tuple[int, str] | None:
    """(byte offset, what is there) of the first NUL byte or invalid UTF-8 sequence of ``data``, or
    None when ``data`` is clean UTF-8 text. A NUL byte anywhere makes the data binary: it is
    reported in preference to a decoding error."""
    nul = data.find(b"\x00")
    if nul != -1:
        return nul, "a NUL byte"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start, f"an invalid UTF-8 sequence (byte 0x{data[exc.start]:02x}: {exc.reason})"
    return None


def decode_text(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text; ``TextFileError`` naming ``source`` and the offset otherwise."""
    bad = first_bad_byte(data)
    if bad is None:
        return data.decode("utf-8")
    offset, what = bad
    if what == "a NUL byte":
        raise TextFileError(f"{source} is a binary file, not text ({what} at byte offset {offset}); "
                            "pass a UTF-8 text file")
    raise TextFileError(f"{source} is not UTF-8 text: {what} at byte offset {offset}; pass a UTF-8 text "
                        "file (convert it first, e.g. `iconv -f latin1 -t utf-8 IN > OUT`)")


def read_text_file(path: str | Path) -> str:
    """The text of a local UTF-8 file. Raises ``TextFileError`` (with the path) when the file is
    missing, is a folder, cannot be read, holds a NUL byte (binary) or is not valid UTF-8 (with
    the byte offset of the first invalid sequence)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise TextFileError(f"text file {p} does not exist; pass the path of a UTF-8 text file")
    if p.is_dir():
        raise TextFileError(f"text file {p} is a folder; pass the path of a UTF-8 text file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TextFileError(f"cannot read text file {p}: {exc.strerror or exc}") from exc
    text = decode_text(data, f"text file {p}")
    log.debug("read %d characters from %s", len(text), p)
    return text

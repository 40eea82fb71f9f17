"""Generated blocks in a Markdown file: the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.

``adaptk bench --markdown FILE`` rewrites such blocks with fresh tables and leaves every other
byte of the file as it was. The functions on text are pure; :func:`rewrite_blocks` is the one
that touches the disk, and it writes atomically.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from adaptk.errors import AdaptkError

_MARKER = re.compile(r"^<!-- ([a-z][a-z0-9-]*):(begin|end) -->[ \t]*\r?$", re.M)


class MarkdownBlockError(AdaptkError, ValueError):
    """A Markdown file whose generated blocks cannot be found or rewritten."""


def begin_marker(name: str) -> str:
    return f"<!-- {name}:begin -->"


def end_marker(name: str) -> str:
    return f"<!-- {name}:end -->"


def find_blocks(text: str, where: str = "the file") -> dict[str, tuple[int, int]]:
    """Each block's name -> (start, end) of its inside: from after the begin line to the end marker.

    Raises :class:`MarkdownBlockError` on a marker without its partner, an end before its begin,
    nested or repeated blocks.
    """
    blocks: dict[str, tuple[int, int]] = {}
    open_name: str | None = None
    start = 0
    for m in _MARKER.finditer(text):
        name, kind = m.group(1), m.group(2)
        if kind == "begin":
            if open_name is not None:
                raise MarkdownBlockError(f"{where}: {begin_marker(name)} inside the open block {open_name!r}; "
                                         f"close it with {end_marker(open_name)} first")
            if name in blocks:
                raise MarkdownBlockError(f"{where}: the block {name!r} appears twice; keep one "
                                         f"{begin_marker(name)} ... {end_marker(name)} pair")
            open_name = name
            start = m.end() + 1 if m.end() < len(text) and text[m.end()] == "\n" else m.end()
        else:
            if open_name != name:
                raise MarkdownBlockError(f"{where}: {end_marker(name)} without a {begin_marker(name)} before it")
            blocks[name] = (start, m.start())
            open_name = None
    if open_name is not None:
        raise MarkdownBlockError(f"{where}: {begin_marker(open_name)} has no {end_marker(open_name)} after it")
    return blocks


def replace_blocks(text: str, contents: dict[str, str], where: str = "the file") -> str:
    """``text`` with the inside of each block named in ``contents`` replaced; the rest unchanged.

    Blocks of ``text`` not named in ``contents`` are left as they are; at least one named block
    must be present.
    """
    blocks = find_blocks(text, where)
    present = [name for name in contents if name in blocks]
    if not present:
        wanted = ", ".join(f"{begin_marker(n)} ... {end_marker(n)}" for n in contents)
        raise MarkdownBlockError(f"{where} has no generated block to rewrite; add {wanted} "
                                 "on lines of their own where the tables should go")
    out, pos = [], 0
    for name in sorted(present, key=lambda n: blocks[n][0]):
        start, end = blocks[name]
        body = contents[name]
        out += [text[pos:start], body if body.endswith("\n") or not body else body + "\n"]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def read_markdown(path: str | os.PathLike) -> str:
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:  # newline="": line endings kept as they are
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise MarkdownBlockError(f"cannot read the Markdown file {path}: {reason}") from exc


def check_blocks(path: str | os.PathLike, names: tuple[str, ...]) -> None:
    """Raise now what :func:`rewrite_blocks` would raise later, before anything long runs."""
    replace_blocks(read_markdown(path), {n: "" for n in names}, where=str(path))


def rewrite_blocks(path: str | os.PathLike, contents: dict[str, str]) -> Path:
    """Rewrite the named blocks of the file at ``path`` in place, atomically (temp file + rename).

    On any error the file is left exactly as it was. Its permission bits are kept.
    """
    path = Path(path)
    text = read_markdown(path)
    new = replace_blocks(text, contents, where=str(path))
    target = path.resolve()  # a symbolic link stays a link: its target is rewritten
    try:
        mode = target.stat().st_mode & 0o7777
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise MarkdownBlockError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(new)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise MarkdownBlockError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path

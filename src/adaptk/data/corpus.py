"""Named text corpora with deterministic train/valid/test splits.

- ``stdlib``: the ``.py`` files of the running Python's standard library
  (``sysconfig.get_paths()["stdlib"]``), without test folders, ``site-packages``, ``idlelib`` and
  ``lib2to3``/``turtledemo`` data. Each file goes to a split by the first byte pair of the sha256 of
  its relative path (posix form): ``h % 100 < 90`` train, ``< 95`` valid, else test. Files are read
  in sorted path order and each split is capped (``STDLIB_CAP_CHARS``), so the text is the same on
  any machine with the same Python minor version; the fingerprint (sha256) is recorded. With
  ``capped=False`` (a spread sample, ``adaptk.data.sample``) every file of the split is read.
- ``gutenberg``: the five novels under ``<data>/gutenberg/``; the Project Gutenberg header and
  licence are cut at the ``*** START``/``*** END`` markers, and each novel is split by line
  position (first 90% train, next 5% valid, last 5% test), concatenated in file-name order.
- ``wikitext-2``: ``<data>/wikitext-2-raw/wiki.{valid,test}.raw``. There is no train split, and
  adaptk never trains on WikiText (it is the held-out evaluation text). Its documents are the
  articles (a line `` = Title = `` starts one).
- local files (``text_file_splits``): concatenated in the given order; lines split by position
  the same 90/5/5 way.
- ``hf:<dataset id>[:<config>]``: a Hugging Face ``datasets`` id (needs ``datasets`` installed and
  the dataset cached or reachable; never used by the tests).

The data root is ``$ADAPTK_DATA_DIR`` if set, else ``shared/data`` found next to a parent of the
package file or of the working directory (the repository layout ``<repo>/../shared/data``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from adaptk.data.errors import CorpusError, DataNotFoundError
from adaptk.data.text import decode_text, read_text_file

log = logging.getLogger(__name__)

CORPORA = ("stdlib", "gutenberg", "wikitext-2")
SPLITS = ("train", "valid", "test")
STDLIB_CAP_CHARS = {"train": 6_000_000, "valid": 400_000, "test": 400_000}
STDLIB_EXCLUDE_DIRS = frozenset({"test", "tests", "site-packages", "dist-packages", "idlelib", "lib2to3",
                                 "turtledemo", "__pycache__", "ensurepip", "config-3"})
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
GUTENBERG_FILES = ("11-0.txt", "1342-0.txt", "1661-0.txt", "174-0.txt", "84-0.txt")
DATA_ENV = "ADAPTK_DATA_DIR"


@dataclass(frozen=True)
class Corpus:
    """One split of a corpus and where it came from."""

    name: str
    split: str
    text: str
    sources: int  # files read
    parts: tuple[str, ...] = ()  # the documents (files, books, articles) whose concatenation is ``text``

    @property
    def documents(self) -> tuple[str, ...]:
        return self.parts or (self.text,)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def data_root() -> Path:
    """The shared data folder: ``$ADAPTK_DATA_DIR`` or the first ``shared/data`` above the package
    file or the working directory."""
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataNotFoundError(f"${DATA_ENV}={env} is not a folder; point it at the shared data folder")
        return root
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for parent in start.parents:
            cand = parent / "shared" / "data"
            if cand.is_dir():
                return cand
    raise DataNotFoundError(
        f"no shared data folder found (looked for shared/data above {Path(__file__).resolve().parent} "
        f"and {Path.cwd()}); set ${DATA_ENV} to the folder holding gutenberg/ and wikitext-2-raw/"
    )


def _read(path: Path) -> str:
    """A file of the shared data folder (strict UTF-8, like every text adaptk reads)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"{path} is missing; check the data folder (${DATA_ENV})") from exc
    except OSError as exc:
        raise CorpusError(f"cannot read {path} ({exc.strerror or exc}); check the data folder (${DATA_ENV})") from exc
    return decode_text(data, str(path))


def split_lines(text: str, split: str) -> str:
    """The ``split`` part of ``text`` by line position: first 90% train, next 5% valid, last 5% test."""
    _check_split(split)
    lines = text.splitlines(keepends=True)
    n = len(lines)
    a = int(n * SPLIT_FRACTIONS[0])
    b = int(n * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]))
    part = {"train": lines[:a], "valid": lines[a:b], "test": lines[b:]}[split]
    return "".join(part)


def _hash_bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:2], "big") % 100


def stdlib_split_of(relpath: str) -> str:
    """Which split a stdlib file (relative posix path) belongs to."""
    h = _hash_bucket(relpath)
    return "train" if h < 90 else "valid" if h < 95 else "test"


def stdlib_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every stdlib ``.py`` file kept, sorted by relative path."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in STDLIB_EXCLUDE_DIRS or part.startswith(("test_", "config-")) for part in rel.parts[:-1]):
            continue
        if rel.name.startswith("test_"):
            continue
        out.append((rel.as_posix(), path))
    out.sort()
    return out


def _stdlib(split: str, capped: bool = True) -> Corpus:
    cap = STDLIB_CAP_CHARS[split] if capped else float("inf")
    parts: list[str] = []
    total = files = 0
    for rel, path in stdlib_files():
        if stdlib_split_of(rel) != split:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            log.debug("skipping unreadable stdlib file %s", rel)
            continue
        doc = f"# file: {rel}\n{text}\n"
        if total + len(doc) > cap:
            break
        parts.append(doc)
        total += len(doc)
        files += 1
    return Corpus("stdlib", split, "".join(parts), files, tuple(parts))


def _strip_gutenberg(text: str) -> str:
    start = text.find("*** START OF")
    if start != -1:
        text = text[text.find("\n", start) + 1:]
    end = text.find("*** END OF")
    if end != -1:
        text = text[:end]
    return text.strip() + "\n"


def _gutenberg(split: str) -> Corpus:
    folder = data_root() / "gutenberg"
    parts = [split_lines(_strip_gutenberg(_read(folder / name)), split) for name in GUTENBERG_FILES]
    return Corpus("gutenberg", split, "".join(parts), len(parts), tuple(parts))


WIKI_HEADING = re.compile(r"^ = [^=].* = $", re.M)


def wikitext_articles(text: str) -> tuple[str, ...]:
    """The articles of a WikiText file (each from its `` = Title = `` line to the next), the text
    before the first heading joined to the first article; their concatenation is ``text``."""
    starts = [m.start() for m in WIKI_HEADING.finditer(text)]
    if not starts:
        return (text,)
    starts[0] = 0
    return tuple(text[a:b] for a, b in zip(starts, [*starts[1:], len(text)]))


def _wikitext(split: str) -> Corpus:
    if split == "train":
        raise CorpusError(
            "wikitext-2 has no train split here and adaptk never trains on WikiText (it is held-out "
            "evaluation text); train on 'stdlib', 'gutenberg' or --text-file, evaluate on wikitext-2 valid/test"
        )
    path = data_root() / "wikitext-2-raw" / f"wiki.{split}.raw"
    text = _read(path)
    return Corpus("wikitext-2", split, text, 1, wikitext_articles(text))


def _hf_dataset(spec: str, split: str) -> Corpus:
    """``hf:<id>[:<config>]`` through the ``datasets`` library (imported only here)."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as exc:
        raise CorpusError(f"corpus {spec!r} needs the 'datasets' package: pip install datasets") from exc
    ident, _, config = spec[3:].partition(":")
    hf_split = {"valid": "validation"}.get(split, split)
    ds = datasets.load_dataset(ident, config or None, split=hf_split)
    column = "text" if "text" in ds.column_names else ds.column_names[0]
    return Corpus(spec, split, "\n".join(str(t) for t in ds[column]), 1)


def load_corpus(name: str, split: str, *, capped: bool = True) -> Corpus:
    """One split of a named corpus, with its fingerprint. Raises ``CorpusError`` on an unknown name
    or split, on WikiText train, and on an empty result. ``capped=False``: the whole split of a
    corpus that is otherwise capped (stdlib)."""
    _check_split(split)
    if name == "stdlib":
        corpus = _stdlib(split, capped)
    elif name == "gutenberg":
        corpus = _gutenberg(split)
    elif name == "wikitext-2":
        corpus = _wikitext(split)
    elif name.startswith("hf:"):
        corpus = _hf_dataset(name, split)
    else:
        raise CorpusError(f"unknown corpus {name!r}; use one of {', '.join(CORPORA)}, or hf:<dataset id>, or a text file")
    if not corpus.text.strip():
        raise CorpusError(f"corpus {name!r} split {split!r} is empty; check the data folder or pick another corpus")
    return corpus


def load_text(name: str, split: str) -> str:
    """The text of one split of a named corpus (``stdlib``, ``gutenberg``, ``wikitext-2``)."""
    return load_corpus(name, split).text


def text_file_splits(paths: list[str | Path], split: str) -> Corpus:
    """Local UTF-8 text files, concatenated in the given order, split by line position (90/5/5)."""
    _check_split(split)
    if not paths:
        raise CorpusError("no text file given; pass at least one --text-file PATH")
    texts = [read_text_file(p) for p in paths]
    full = "".join(t if t.endswith("\n") else t + "\n" for t in texts)
    if not full.strip():
        raise CorpusError(f"the text files {', '.join(map(str, paths))} are empty; pass files with text in them")
    text = split_lines(full, split)
    if not text.strip():
        raise CorpusError(
            f"the {split} part (by line position, 90/5/5) of the text files is empty: the files have too "
            f"few lines ({full.count(chr(10))}); give at least 20 lines"
        )
    return Corpus("text-file", split, text, len(paths))

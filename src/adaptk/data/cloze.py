"""Offline downstream items built from a text split: pure, deterministic, seeded.

Two multiple-choice tasks, both "which continuation does the model prefer" (scored by the sum
of the continuation's token log-likelihoods, ``adaptk.measure.choice``):

- ``last_word`` (prose: the novels, WikiText): the last word of a sentence (a word of 3+
  letters right before ``.``, ``!`` or ``?``; WikiText's `` .`` too) given all the document
  before it, against ``n_choices - 1`` other words of the same document.
- ``next_line`` (source code: stdlib): the next non-blank line of a file (with the newline
  before it) given the file before it, against other lines of the same file.

Distractors are the candidates closest in ``length`` to the true continuation (by default its
characters; the CLI passes its token count, so that a sum of log-likelihoods does not simply
prefer the shortest choice), ties broken by a seeded draw. Items are spread over the documents
(an even share each, ``adaptk.data.sample.even_shares``), evenly spaced inside each one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from adaptk.data.errors import CorpusError
from adaptk.data.sample import even_shares

# the sentence's last word: 3+ letters after whitespace, before . ! ? (WikiText: " ."), then a
# closing quote or bracket at most, then whitespace or the end
LAST_WORD = re.compile(r"(?<=\s)([A-Za-z]{3,})(?= ?[.!?][\"'\u201d\u2019)]*(?:\s|$))")
WORD = re.compile(r"(?<=\s)[A-Za-z]{3,}(?=\W)")
ABBREVIATIONS = frozenset({"Mrs", "Mme", "Esq", "etc", "viz", "Messrs"})
MIN_CONTEXT_CHARS = 200  # an item needs this much of its document before it
MAX_LINE_CHARS = 100  # next_line: longer lines are neither answers nor distractors


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice item: ``context`` followed by one of ``choices``; ``choices[answer]`` is
    what the text says. ``document`` and ``offset`` say where the answer starts."""

    context: str
    choices: tuple[str, ...]
    answer: int
    document: int
    offset: int


@dataclass(frozen=True)
class Candidate:
    """A place in a document where a continuation starts: the text before ``offset`` is its context,
    the continuation is ``prefix + text`` (distractors get the same ``prefix``: the whitespace before a word)."""

    offset: int
    text: str
    prefix: str = ""


def sentence_ends(doc: str) -> list[Candidate]:
    """Every sentence-final word of ``doc`` (its prefix: the whitespace before it) that has at least
    ``MIN_CONTEXT_CHARS`` of document before it."""
    out = []
    for m in LAST_WORD.finditer(doc):
        word, start = m.group(1), m.start(1) - 1
        if word in ABBREVIATIONS or start < MIN_CONTEXT_CHARS:
            continue
        out.append(Candidate(start, word, doc[start]))
    return out


def word_pool(doc: str) -> list[str]:
    """The distinct words (3+ letters) of ``doc``, in first-seen order."""
    return list(dict.fromkeys(WORD.findall(doc)))


def code_lines(doc: str) -> list[Candidate]:
    """Every non-blank line of ``doc`` of at most ``MAX_LINE_CHARS`` characters (without its newline)
    that has at least ``MIN_CONTEXT_CHARS`` before it; a line starting ``# file:`` is a header, never used.
    The newline that ends the line before is the prefix of the continuation: a byte-level BPE merges
    it with the indentation that follows (``"\\n   "``), so context and choice split where the model's
    own tokens do."""
    out, pos = [], 0
    for line in doc.splitlines(keepends=True):
        text = line.rstrip("\r\n")
        if text.strip() and len(text) <= MAX_LINE_CHARS and not text.startswith("# file:") and pos >= MIN_CONTEXT_CHARS:
            out.append(Candidate(pos - 1, text, "\n"))
        pos += len(line)
    return out


def line_pool(doc: str) -> list[str]:
    """The distinct usable lines of ``doc`` (as ``code_lines``, with no context requirement)."""
    lines = (line.rstrip("\r\n") for line in doc.splitlines())
    return list(dict.fromkeys(t for t in lines if t.strip() and len(t) <= MAX_LINE_CHARS
                              and not t.startswith("# file:")))


def pick_distractors(answer: str, pool: Sequence[str], n: int, rng: np.random.Generator,
                     length: Callable[[str], int] = len, kind: Callable[[str], object] = lambda t: None
                     ) -> list[str] | None:
    """``n`` entries of ``pool`` of the same ``kind`` as ``answer`` that differ from it (ignoring case and
    surrounding space): those closest in ``length`` to it, ties broken by a draw from ``rng``; None if
    there are too few."""
    key, want = answer.strip().lower(), kind(answer)
    others = [p for p in pool if p.strip().lower() != key and kind(p) == want]
    if len(others) < n:
        return None
    target = length(answer)
    ties = rng.random(len(others))
    order = sorted(range(len(others)), key=lambda i: (abs(length(others[i]) - target), ties[i]))
    return [others[i] for i in order[:n]]


def spaced(count: int, take: int) -> list[int]:
    """``take`` indices of ``range(count)`` spaced evenly (each the middle of its stretch)."""
    return [(2 * j + 1) * count // (2 * take) for j in range(take)]


def capitalised(word: str) -> bool:
    return word[:1].isupper()


def indentation(line: str) -> int:
    return len(line) - len(line.lstrip())


@dataclass(frozen=True)
class Task:
    """How a task reads a document: where its items are, what its distractors are drawn from, and
    the kind a distractor shares with the answer (so that case or indentation gives nothing away)."""

    candidates: Callable[[str], list[Candidate]]
    pool: Callable[[str], list[str]]
    kind: Callable[[str], object]


TASKS: dict[str, Task] = {
    "last_word": Task(sentence_ends, word_pool, capitalised),
    "next_line": Task(code_lines, line_pool, indentation),
}
# the task each built-in corpus gets (any other text: last_word)
CORPUS_TASKS = {"stdlib": "next_line", "gutenberg": "last_word", "wikitext-2": "last_word"}


def task_for(corpus: str | None) -> str:
    return CORPUS_TASKS.get(corpus or "stdlib", "last_word")


def build_items(docs: Sequence[str], task: str, n_items: int, *, n_choices: int = 4, seed: int = 0,
                length: Callable[[str], int] = len) -> list[ChoiceItem]:
    """Up to ``n_items`` items of ``task`` from the documents ``docs``, spread over them; the true
    choice's position among the ``n_choices`` is drawn from the seeded generator. Raises
    ``CorpusError`` on an unknown task or when the text yields no item."""
    if task not in TASKS:
        raise CorpusError(f"unknown downstream task {task!r}; use one of {', '.join(TASKS)}")
    if n_items < 1 or n_choices < 2:
        raise CorpusError(f"need n_items >= 1 and n_choices >= 2, got {n_items} and {n_choices}")
    t = TASKS[task]
    rng = np.random.default_rng(seed)
    found = [t.candidates(d) for d in docs]
    items = []
    for d, (doc, cands, share) in enumerate(zip(docs, found, even_shares([len(c) for c in found], n_items))):
        if not share:
            continue
        pool = t.pool(doc)
        for i in spaced(len(cands), share):
            c = cands[i]
            others = pick_distractors(c.text, pool, n_choices - 1, rng, lambda x, p=c.prefix: length(p + x), t.kind)
            if others is None:
                continue
            answer = int(rng.integers(n_choices))
            choices = [c.prefix + t for t in (*others[:answer], c.text, *others[answer:])]
            items.append(ChoiceItem(doc[: c.offset], tuple(choices), answer, d, c.offset))
    if not items:
        raise CorpusError(f"the text yields no {task} item (it needs documents of more than {MIN_CONTEXT_CHARS} "
                          f"characters with {n_choices} distinct candidates); give a longer text")
    return items

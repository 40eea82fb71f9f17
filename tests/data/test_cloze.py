"""The downstream item builder against hand-made examples: where the items are, which
distractors are drawn, and that the build is deterministic in its seed."""

from __future__ import annotations

import numpy as np
import pytest

from adaptk.data import CorpusError
from adaptk.data.cloze import (
    MIN_CONTEXT_CHARS,
    build_items,
    code_lines,
    pick_distractors,
    sentence_ends,
    spaced,
    task_for,
    word_pool,
)

PAD = "x " * (MIN_CONTEXT_CHARS // 2)  # context enough for the first sentence to count


def test_sentence_ends_by_hand():
    doc = PAD + "The cat sat on the mat. Mrs. Smith said hello!\nThe dog ran home .\nIt is over\"  No end"
    found = [(c.prefix, c.text) for c in sentence_ends(doc)]
    assert found == [(" ", "mat"), (" ", "hello"), (" ", "home")]  # not "Mrs", not "over" (no end mark)
    first = sentence_ends(doc)[0]
    assert doc[first.offset:].startswith(" mat.")
    assert sentence_ends("The cat sat on the mat.") == []  # no context before it


def test_word_pool_and_code_lines():
    assert word_pool(" The cat and the Cat, a dog.") == ["The", "cat", "and", "the", "Cat", "dog"]
    doc = "# file: a.py\n" + "#" * MIN_CONTEXT_CHARS + "\n\n    x = 1\n" + "y" * 101 + "\nreturn x\n"
    lines = code_lines(doc)
    assert [c.text for c in lines] == ["    x = 1", "return x"]  # blank, header and over-long lines left out
    assert doc[lines[0].offset:].startswith("\n    x = 1\n") and lines[0].prefix == "\n"


def test_pick_distractors_by_hand():
    rng = np.random.default_rng(0)
    pool = ["ab", "abcd", "abcdefg", "xyz", "abcdefgh", "Abcd"]
    got = pick_distractors("abcd", pool, 2, rng)
    assert got == ["xyz", "ab"]  # closest in length first; "abcd" and "Abcd" are the answer itself
    caps = pick_distractors("Word", pool, 1, rng, kind=lambda w: w[0].isupper())
    assert caps == ["Abcd"]  # the only capitalised entry
    ties = {tuple(pick_distractors("abcd", ["abc", "xyz", "pqr", "lmn"], 2, np.random.default_rng(s)))
            for s in range(20)}
    assert len(ties) > 1  # equal lengths: the seeded draw decides
    assert pick_distractors("abcd", pool, 5, rng) is None


def test_spaced():
    assert spaced(10, 2) == [2, 7] and spaced(3, 3) == [0, 1, 2] and spaced(5, 1) == [2]


def test_build_items_by_hand():
    doc = PAD + "One fine day. Two big cats. A red door. The old man."
    items = build_items([doc], "last_word", 10, n_choices=3, seed=1)
    assert len(items) == 4
    words = {"day", "cats", "door", "man"}
    for it in items:
        true = it.choices[it.answer]
        assert it.context + true == doc[: it.offset + len(true)]
        assert len(set(it.choices)) == 3 and all(c.startswith(" ") for c in it.choices)
        assert true.strip() in words
    assert items == build_items([doc], "last_word", 10, n_choices=3, seed=1)  # deterministic


def test_build_items_spread_and_code():
    words = ["cat", "dog", "hen", "fox", "owl", "elk", "yak", "emu"]
    docs = [PAD + " ".join(f"the {w} sat." for w in words * 3), PAD + "one big day. " + PAD + "two red cats."]
    items = build_items(docs, "last_word", 6, seed=0)
    assert [it.document for it in items] == [0, 0, 0, 0, 1, 1]  # doc 1 has 2 items: doc 0 takes the rest
    code = "# file: m.py\n" + "\n".join(f"v{i} = {i}" * 3 for i in range(60)) + "\n"
    items = build_items([code], "next_line", 5, seed=0)
    assert len(items) == 5 and all(len({len(c) - len(c.lstrip()) for c in it.choices}) == 1 for it in items)
    assert [it.offset for it in items] == sorted(it.offset for it in items)  # spaced through the file
    for it in items:
        assert code[it.offset:].startswith(it.choices[it.answer] + "\n") and it.context == code[: it.offset]


def test_build_items_answer_positions_are_drawn():
    doc = PAD + " ".join(f"the {w} sat." for w in ["cat", "dog", "hen", "fox", "owl", "elk", "yak", "emu"] * 4)
    items = build_items([doc], "last_word", 32, seed=0)
    assert len({it.answer for it in items}) > 1  # not always the same slot


def test_errors_and_task_for():
    with pytest.raises(CorpusError, match="unknown downstream task"):
        build_items(["x"], "nope", 1)
    with pytest.raises(CorpusError, match="yields no last_word item"):
        build_items(["too short."], "last_word", 5)
    assert task_for("stdlib") == task_for(None) == "next_line" and task_for("gutenberg") == "last_word"

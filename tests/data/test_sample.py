"""Spread samples against plain references: shares by a linear search for the cap, pieces that
tile each document in order, every document represented, deterministic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptk.data import load_corpus
from adaptk.data.corpus import wikitext_articles
from adaptk.data.sample import even_shares, piece_spans, spread_sample, spread_sample_documents


def _shares_reference(lengths, total):
    """The largest cap found by counting up, then +1 to documents with room in order."""
    if sum(lengths) <= total:
        return list(lengths)
    cap = 0
    while sum(min(n, cap + 1) for n in lengths) <= total:
        cap += 1
    shares = [min(n, cap) for n in lengths]
    for i, n in enumerate(lengths):
        if sum(shares) == total:
            break
        if n > shares[i]:
            shares[i] += 1
    return shares


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=8), st.integers(0, 300))
def test_even_shares_match_the_reference(lengths, total):
    shares = even_shares(lengths, total)
    assert shares == _shares_reference(lengths, total)
    assert sum(shares) == min(total, sum(lengths)) and all(0 <= s <= n for s, n in zip(shares, lengths))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.data())
def test_piece_spans_tile_the_document(length, data):
    share = data.draw(st.integers(0, length))
    piece = data.draw(st.integers(1, 64))
    spans = piece_spans(length, share, piece)
    assert sum(s for _, s in spans) == share and all(0 < s <= piece for _, s in spans)
    ends = [0] + [a + s for a, s in spans]
    assert all(a >= e for (a, _), e in zip(spans, ends))  # in order, never overlapping
    assert ends[-1] <= length
    if len(spans) > 1:  # the gaps between pieces differ by at most one token
        gaps = [spans[i + 1][0] - ends[i + 1] for i in range(len(spans) - 1)]
        assert max(gaps) - min(gaps) <= 1


def test_spread_sample_covers_every_document_and_is_deterministic():
    docs = [list(range(f * 10_000, f * 10_000 + n)) for f, n in enumerate([5000, 300, 2000, 40, 900])]
    out = spread_sample(docs, 2000, piece=100)
    assert len(out) == 2000 and len(set(out)) == 2000  # no token position twice
    per_doc = [sum(1 for t in out if t // 10_000 == f) for f in range(5)]
    assert per_doc == even_shares([5000, 300, 2000, 40, 900], 2000) and min(per_doc) > 0
    assert out == spread_sample(docs, 2000, piece=100) and out != spread_sample(docs, 2000, piece=100, seed=1)
    first_quarter = {t // 10_000 for t in out[:500]}
    assert len(first_quarter) >= 3  # a prefix is itself spread over the documents
    doc0 = [t for t in out if t < 10_000]
    assert min(doc0) < 1000 and max(doc0) > 4000  # across the whole document, not its start
    assert spread_sample(docs, 10**6, piece=100).__len__() == sum(map(len, docs))
    with pytest.raises(ValueError, match="piece"):
        spread_sample(docs, 10, piece=0)


def test_spread_sample_documents_label_each_token_with_its_document():
    docs = [list(range(f * 10_000, f * 10_000 + n)) for f, n in enumerate([5000, 300, 2000, 40, 900])]
    ids, labels = spread_sample_documents(docs, 2000, piece=100, seed=3)
    assert ids == spread_sample(docs, 2000, piece=100, seed=3)
    assert labels == [t // 10_000 for t in ids]  # the plain reference: each token's value names its document


def test_wikitext_articles_split_at_headings():
    text = " \n = A = \n\n x \n = = sub = = \n y \n = B = \n z \n"
    arts = wikitext_articles(text)
    assert "".join(arts) == text and len(arts) == 2 and arts[1].startswith(" = B = ")
    assert wikitext_articles("no heading\n") == ("no heading\n",)
    w = load_corpus("wikitext-2", "test")
    assert "".join(w.documents) == w.text and len(w.documents) > 50


def test_corpus_documents_and_the_uncapped_stdlib():
    capped, whole = load_corpus("stdlib", "test"), load_corpus("stdlib", "test", capped=True)
    assert capped.sha256 == whole.sha256 and "".join(capped.documents) == capped.text
    full = load_corpus("stdlib", "test", capped=False)
    assert full.sources >= capped.sources and full.text.startswith(capped.text)
    g = load_corpus("gutenberg", "valid")
    assert len(g.documents) == 5 and "".join(g.documents) == g.text

"""Representative token samples: pieces drawn across every document of a split, deterministically.

``first`` takes the first tokens of the concatenated split (a few files of it, whatever comes
first in file order). ``spread`` shares the token budget over all documents (files, books,
articles): each gets an equal share, a document shorter than its share gives all of itself and
the rest goes to the others (so the cap per document is as even as the lengths allow); a
document's share is cut into pieces of at most ``piece`` tokens spaced evenly across it. The
pieces are then put in one fixed pseudo-random order (``seed``), so that any prefix of the sample
(the first tokens a quality search or a matched-k check uses) is itself spread over the split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SAMPLES = ("first", "spread")


def piece_tokens(window: int) -> int:
    """Tokens per piece of a spread sample scored with ``window``-token windows: long enough that
    most windows lie inside one piece."""
    return max(1024, 2 * window)


def even_shares(lengths: Sequence[int], total: int) -> list[int]:
    """Tokens taken from each document: ``min(length, cap)`` with the largest integer cap whose
    sum stays within ``total``, then the remainder one token each to the documents with room,
    in document order. The shares sum to ``min(total, sum(lengths))``."""
    if total < 0:
        raise ValueError(f"total must be >= 0 tokens, got {total}")
    lengths = [max(0, int(n)) for n in lengths]
    if sum(lengths) <= total:
        return lengths
    lo, hi = 0, max(lengths)
    while lo < hi:  # the largest cap with sum(min(n, cap)) <= total
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= total:
            lo = mid
        else:
            hi = mid - 1
    shares = [min(n, lo) for n in lengths]
    left = total - sum(shares)
    for i, n in enumerate(lengths):
        if left == 0:
            break
        if n > shares[i]:
            shares[i] += 1
            left -= 1
    return shares


def piece_spans(length: int, share: int, piece: int) -> list[tuple[int, int]]:
    """(start, size) of the pieces of one document: ``share`` tokens in ceil(share/piece) pieces of
    near-equal size, the gaps between them equal (each piece centred in its stretch)."""
    if share <= 0:
        return []
    m = -(-share // piece)
    sizes = [share // m + (1 if j < share % m else 0) for j in range(m)]
    gap = length - share
    spans, taken = [], 0
    for j, size in enumerate(sizes):
        start = taken + gap * (2 * j + 1) // (2 * m)  # the gap before piece j: gap·(j + ½)/m, floored
        spans.append((start, size))
        taken += size
    return spans


def spread_sample(docs: Sequence[Sequence[int]], total: int, piece: int, seed: int = 0) -> list[int]:
    """``total`` tokens (or all there are) from token documents ``docs``, spread over every one of
    them; returns the concatenated pieces in a fixed pseudo-random order."""
    return spread_sample_documents(docs, total, piece, seed)[0]


def spread_sample_documents(docs: Sequence[Sequence[int]], total: int, piece: int,
                            seed: int = 0) -> tuple[list[int], list[int]]:
    """``spread_sample`` and, aligned with its tokens, the index in ``docs`` of the document each
    token came from (what a leave-documents-out cross-validation groups by)."""
    if piece < 1:
        raise ValueError(f"piece must be >= 1 token, got {piece}")
    shares = even_shares([len(d) for d in docs], total)
    pieces = [(f, start, size) for f, (d, share) in enumerate(zip(docs, shares))
              for start, size in piece_spans(len(d), share, piece)]
    order = np.random.default_rng(seed).permutation(len(pieces))
    out: list[int] = []
    labels: list[int] = []
    for i in order:
        f, start, size = pieces[int(i)]
        out.extend(docs[f][start: start + size])
        labels.extend([f] * size)
    return out, labels

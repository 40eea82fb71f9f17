"""Batched choice scoring (context once, KV cache repeated per choice) against a plain loop of
full forward passes, one (context, choice) at a time; and the accuracy intervals against plain
references (the Wilson formula, Newcombe's paired interval from the 2x2 counts, coverage)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_model

from adaptk.engines.transformers.patch import patch
from adaptk.measure import IntervalError
from adaptk.measure.accuracy import accuracy_difference, accuracy_interval, mcnemar
from adaptk.measure.choice import ChoiceError, TokenItem, accuracy, choice_loglikelihoods, encode_items
from adaptk.routing import FixedTopK


def _items(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ctx = torch.randint(1, 64, (8 + (i % 3) * 5,), generator=g).tolist()  # three context lengths
        choices = tuple(tuple(torch.randint(1, 64, (1 + (i + j) % 4,), generator=g).tolist()) for j in range(4))
        out.append(TokenItem(tuple(ctx), choices, i % 4))
    return out


@torch.no_grad()
def _plain(model, items):
    out = torch.empty(len(items), len(items[0].choices), dtype=torch.float64)
    for i, it in enumerate(items):
        for j, c in enumerate(it.choices):
            seq = torch.tensor([[*it.context, *c]])
            lp = torch.log_softmax(model(input_ids=seq, use_cache=False).logits[0].double(), -1)
            out[i, j] = sum(float(lp[len(it.context) - 1 + t, tok]) for t, tok in enumerate(c))
    return out


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_batched_scores_match_a_plain_loop(family):
    model, items = tiny_model(family), _items()
    want = _plain(model, items)
    for bs in (1, 3, 16):
        torch.testing.assert_close(choice_loglikelihoods(model, items, batch_size=bs), want, rtol=0, atol=2e-4)
    with patch(model, FixedTopK(1)):  # a patched model too (fewer experts: other scores)
        got, ref = choice_loglikelihoods(model, items, batch_size=4), _plain(model, items)
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-4)
    assert not torch.allclose(got, want, atol=1e-3)


def test_accuracy_and_bad_items():
    items = _items(3)
    scores = torch.tensor([[0.0, -1, -2, -3], [-1.0, -2, -3, -4], [-5.0, -6, -1, -1]])
    assert accuracy(scores, items).tolist() == [True, False, True]  # answers 0, 1, 2; a tie takes the first
    with pytest.raises(ChoiceError, match="same number"):
        choice_loglikelihoods(tiny_model("mixtral"), [items[0], TokenItem((1, 2), ((1,), (2,)), 0)])
    with pytest.raises(ChoiceError, match="no items"):
        choice_loglikelihoods(tiny_model("mixtral"), [])


def test_encode_items_keeps_the_last_context_tokens():
    from adaptk.data.cloze import ChoiceItem

    enc = lambda s: [ord(ch) for ch in s]
    items = [ChoiceItem("a" * 30 + "bcdefghij", ("xy", "z"), 1, 0, 39), ChoiceItem("abc", ("x" * 30, "y"), 0, 0, 3)]
    got = encode_items(items, enc, window=10)
    assert got == [TokenItem(tuple(enc("cdefghij")), ((120, 121), (122,)), 1)]  # 10 - 2; the second cannot fit


def test_wilson_interval_by_hand():
    iv = accuracy_interval([1] * 8 + [0] * 2)
    z = 1.959963984540054
    p, n = 0.8, 10
    c, h = (p + z * z / 20) / (1 + z * z / n), z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / 400)
    assert (iv.estimate, iv.lo, iv.hi) == pytest.approx((0.8, c - h, c + h)) and iv.lo == pytest.approx(0.4902, abs=1e-4)
    assert accuracy_interval([1, 1, 1]).hi == 1.0


def _newcombe_by_hand(a, b, z=1.959963984540054):
    """Newcombe's method 10 from the 2x2 counts, in plain Python (Wilson limits by their formula)."""
    n = len(a)
    t = [[0, 0], [0, 0]]  # t[a right][b right]
    for x, y in zip(a, b):
        t[int(x)][int(y)] += 1
    def wilson(k):
        p = k / n
        c, h = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return p, c - h, c + h
    (p1, l1, u1), (p2, l2, u2) = wilson(t[1][1] + t[1][0]), wilson(t[1][1] + t[0][1])
    den = (t[1][1] + t[1][0]) * (t[0][1] + t[0][0]) * (t[1][1] + t[0][1]) * (t[1][0] + t[0][0])
    phi = (t[1][1] * t[0][0] - t[1][0] * t[0][1]) / math.sqrt(den) if den else 0.0
    d = p1 - p2
    return (d, d - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))


def test_paired_difference_against_references():
    rng = np.random.default_rng(3)
    a = (rng.random(60) < 0.6).astype(float)
    b = np.where(rng.random(60) < 0.8, a, 1 - a)  # paired: mostly the same items right
    iv = accuracy_difference(torch.tensor(a), torch.tensor(b))
    assert (iv.estimate, iv.lo, iv.hi) == pytest.approx(_newcombe_by_hand(a.tolist(), b.tolist()))
    assert iv.estimate == pytest.approx(a.mean() - b.mean())
    same = accuracy_difference(a, a)
    assert same.lo < 0 < same.hi and not same.excludes_zero() and same.hi - same.lo < 0.05
    few = np.r_[np.ones(5), np.zeros(1), np.ones(50)], np.r_[np.zeros(5), np.ones(1), np.ones(50)]
    assert not accuracy_difference(*few).excludes_zero()  # 5 vs 1 discordant items: McNemar p = 0.22
    assert mcnemar(*few) == {"only_a": 5, "only_b": 1, "p": pytest.approx(2 * 7 / 64)}  # 2 P(X <= 1), X ~ B(6, 1/2)
    assert mcnemar(a, a)["p"] == 1.0 and mcnemar([1, 1, 1, 1], [0, 0, 0, 0])["p"] == pytest.approx(2 / 16)
    with pytest.raises(IntervalError, match="same items"):
        accuracy_difference(a, a[:5])


def test_paired_difference_coverage():
    """Coverage on paired data with a known difference (0.05): close to the 95% promised."""
    rng = np.random.default_rng(0)
    hits, n = 0, 150
    for _ in range(400):
        u = rng.random(n)
        a, b = u < 0.55, u < 0.50  # P(a) - P(b) = 0.05, strongly paired
        flip = rng.random(n) < 0.15  # some items b gets right independently of a
        b = np.where(flip, rng.random(n) < 0.5, b)
        truth = 0.55 - (0.85 * 0.50 + 0.15 * 0.5)
        iv = accuracy_difference(a, b)
        hits += iv.lo <= truth <= iv.hi
    assert 0.92 <= hits / 400 <= 0.985

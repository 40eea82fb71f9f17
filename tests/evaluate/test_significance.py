"""The Mann-Whitney test and its effect size against plain references (pair counts, the normal
approximation written out), and the verdicts on the paper's token claims."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from adaptk.evaluate.significance import mann_whitney, token_claims, verdict


def _u_pairs(a, b):
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)


def test_u_and_rank_biserial_are_pair_counts():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 6, 25).tolist(), rng.integers(1, 7, 30).tolist()  # with ties
    t = mann_whitney(a, b)
    assert t["u"] == _u_pairs(a, b) and (t["n_a"], t["n_b"]) == (25, 30)
    greater = sum(x > y for x in a for y in b) / (25 * 30)
    less = sum(x < y for x in a for y in b) / (25 * 30)
    assert t["rank_biserial"] == pytest.approx(greater - less, abs=1e-12)


def test_p_value_is_the_normal_approximation_without_ties():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 40), rng.normal(0.5, 1, 50)
    t = mann_whitney(a, b)
    u, n1, n2 = _u_pairs(a, b), 40, 50
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    assert t["p"] == pytest.approx(2 * (1 - NormalDist().cdf(z)), rel=1e-6)
    assert t["rank_biserial"] < 0  # a tends to be lower


def test_separated_and_identical_samples():
    assert mann_whitney([1, 2, 3], [4, 5, 6])["rank_biserial"] == -1.0
    same = mann_whitney([1.0, 2.0, 3.0] * 10, [1.0, 2.0, 3.0] * 10)
    assert same["rank_biserial"] == 0.0 and same["p"] == pytest.approx(1.0)
    assert mann_whitney([], [1.0])["p"] is None


def test_verdicts():
    assert verdict("lower", {"rank_biserial": -0.3, "p": 1e-6}) == "supported"
    assert verdict("lower", {"rank_biserial": 0.3, "p": 1e-6}) == "contradicted"
    assert verdict("lower", {"rank_biserial": -0.3, "p": 0.01}) == "inconclusive"
    assert verdict("lower", {"rank_biserial": None, "p": None}) == "inconclusive"


def test_token_claims_say_where_the_data_contradict_the_paper():
    rng = np.random.default_rng(2)
    low_loss, high_loss = rng.normal(4.7, 1, 500), rng.normal(4.0, 1, 500)  # low-k tokens harder
    low_rank, high_rank = rng.integers(0, 100, 500), rng.integers(0, 2000, 500)  # and more frequent
    tc = {"low_k": {"mean_loss": float(low_loss.mean()), "mean_frequency_rank": float(low_rank.mean())},
          "high_k": {"mean_loss": float(high_loss.mean()), "mean_frequency_rank": float(high_rank.mean())},
          "tests": {"loss": mann_whitney(low_loss, high_loss), "frequency_rank": mann_whitney(low_rank, high_rank)}}
    claims = {c["metric"]: c for c in token_claims(tc)}
    assert claims["loss"]["verdict"] == "contradicted" and "contradicts the paper" in claims["loss"]["text"]
    assert "higher mean loss" in claims["loss"]["text"]
    assert claims["frequency_rank"]["verdict"] == "supported" and "agrees with" in claims["frequency_rank"]["text"]

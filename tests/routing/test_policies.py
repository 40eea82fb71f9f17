"""Routing invariants of every policy (property tests) and their bad-input errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptk import EntropyThreshold, FixedTopK, PolicyError, RatioSkip, TopP, routing_entropy
from adaptk.routing import policy_from_dict

N_MAX = 16


@st.composite
def distributions(draw):
    t = draw(st.integers(1, 12))
    n = draw(st.integers(4, N_MAX))
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0]))
    logits = torch.randn(t, n, generator=torch.Generator().manual_seed(seed)) * scale
    return logits.softmax(-1)


def policies(n):
    return [
        FixedTopK(2),
        EntropyThreshold([1, 2, 4], [0.3 * math.log(n), 0.7 * math.log(n)]),
        EntropyThreshold.from_fractions([1, 2], [0.5], n, temperature=2.0),
        TopP(0.6, min_k=1, max_k=4),
        RatioSkip(0.3, max_k=4),
    ]


@settings(max_examples=60, deadline=None)
@given(distributions())
def test_kept_experts_are_the_highest_weight_ones(p):
    t, n = p.shape
    for policy in policies(n):
        d = policy(p, native_k=2)
        kmax = d.indices.shape[1]
        assert d.indices.shape == d.weights.shape == (t, kmax)
        order = p.argsort(-1, descending=True)
        for row in range(t):
            k = int(d.k[row])
            kept = d.indices[row, :k]
            assert (d.indices[row, k:] == n).all() and (d.weights[row, k:] == 0).all()
            # highest weight first, and no dropped expert beats a kept one
            kept_p = p[row, kept]
            assert (kept_p[:-1] >= kept_p[1:]).all()
            assert set(kept.tolist()) == set(order[row, :k].tolist()) or torch.isclose(
                p[row, order[row, k - 1]], kept_p[-1]
            )
        torch.testing.assert_close(d.weights.sum(-1), torch.ones(t))  # renormalised convention
        raw = policy(p, native_k=2, renormalize=False)
        torch.testing.assert_close(raw.weights, torch.where(raw.indices < n, p.gather(1, raw.indices.clamp_max(n - 1)), 0.0))


@settings(max_examples=60, deadline=None)
@given(distributions())
def test_k_in_allowed_set(p):
    assert set(EntropyThreshold([1, 2, 4], [1.0, 2.0])(p).k.tolist()) <= {1, 2, 4}
    assert (FixedTopK(3)(p).k == 3).all()
    k = TopP(0.9, min_k=2, max_k=4)(p).k
    assert ((k >= 2) & (k <= 4)).all()
    k = RatioSkip(0.5, max_k=3)(p).k
    assert ((k >= 1) & (k <= 3)).all()


@settings(max_examples=60, deadline=None)
@given(distributions())
def test_entropy_threshold_k_is_monotone_in_entropy(p):
    n = p.shape[1]
    policy = EntropyThreshold([1, 2, 3, 4], [0.2 * math.log(n), 0.5 * math.log(n), 0.8 * math.log(n)])
    d = policy(p)
    h = routing_entropy(p)
    order = h.argsort()
    assert (d.k[order][1:] >= d.k[order][:-1]).all()
    torch.testing.assert_close(d.entropy, h)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(4, N_MAX), st.integers(0, 2**16), st.sampled_from([torch.bfloat16, torch.float16]))
def test_low_precision_logits_give_the_same_k_up_to_ties(t, n, seed, dtype):
    """Routing math runs in float32 on the model-dtype logits; k may differ from float32 logits
    only where rounding the logits moved the decision statistic across a decision boundary."""
    logits = torch.randn(t, n, generator=torch.Generator().manual_seed(seed)) * 2
    p32 = logits.softmax(-1)
    plow = logits.to(dtype).float().softmax(-1)
    log_n = math.log(n)
    th = (0.4 * log_n, 0.8 * log_n)
    k32 = EntropyThreshold([1, 2, 4], th)(p32).k
    klow = EntropyThreshold([1, 2, 4], th)(plow).k
    h32, hlow = routing_entropy(p32), routing_entropy(plow)
    lo, hi = torch.minimum(h32, hlow), torch.maximum(h32, hlow)
    crossed = torch.zeros(t, dtype=torch.bool)
    for theta in th:
        crossed |= (lo <= theta) & (theta <= hi)
    assert ((k32 == klow) | crossed).all()
    assert torch.equal(FixedTopK(3)(p32).k, FixedTopK(3)(plow).k)
    # TopP: the cumulative mass of the top experts decides; differences need a crossing of p
    c32 = p32.sort(-1, descending=True).values.cumsum(-1)[:, :4]
    clow = plow.sort(-1, descending=True).values.cumsum(-1)[:, :4]
    ktp32, ktplow = TopP(0.7, max_k=4)(p32).k, TopP(0.7, max_k=4)(plow).k
    crossed_p = ((c32 < 0.7) != (clow < 0.7)).any(-1)
    assert ((ktp32 == ktplow) | crossed_p).all()
    # the low-precision run is routed in float32, never in the input dtype
    d = EntropyThreshold([1, 2, 4], th)(plow.to(dtype))
    assert d.entropy.dtype == torch.float32


def test_top_p_smallest_prefix_reaching_p():
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.9, 0.05, 0.03, 0.02], [0.25, 0.25, 0.25, 0.25]])
    assert TopP(0.8, max_k=4)(p).k.tolist() == [2, 1, 4]
    assert TopP(0.8, max_k=2)(p).k.tolist() == [2, 1, 2]
    assert TopP(0.8, min_k=2, max_k=4)(p).k.tolist() == [2, 2, 4]


def test_ratio_skip_rule():
    p = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.5, 0.1, 0.1, 0.3]])
    # second row: ranked 0.5, 0.3, 0.1, 0.1 -> 0.3 >= 0.25 kept, 0.1 < 0.25 stops
    assert RatioSkip(0.5, max_k=4)(p).k.tolist() == [2, 2]
    assert RatioSkip(0.9, max_k=4)(p).k.tolist() == [1, 1]
    assert RatioSkip(0.0, max_k=3)(p).k.tolist() == [3, 3]


def test_entropy_threshold_rule_and_per_layer():
    n = 4
    p = torch.tensor([[1.0, 0, 0, 0], [0.25] * 4])  # H = 0, log 4
    policy = EntropyThreshold([1, 2, 4], [[0.5, 1.0], [math.log(n) + 1, math.log(n) + 2]])
    assert policy(p, layer=0).k.tolist() == [1, 4]
    assert policy(p, layer=1).k.tolist() == [1, 1]
    with pytest.raises(PolicyError, match="per-layer"):
        policy(p, layer=2)


def test_from_fractions():
    policy = EntropyThreshold.from_fractions([1, 2, 4], [0.3, 0.6], 8)
    assert policy.thresholds == pytest.approx((0.3 * math.log(8), 0.6 * math.log(8)))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: FixedTopK(0), "k >= 1"),
        (lambda: EntropyThreshold([2, 1], [0.5]), "strictly increasing"),
        (lambda: EntropyThreshold([1, 1], [0.5]), "strictly increasing"),
        (lambda: EntropyThreshold([1, 2, 4], [0.5]), "needs 2 thresholds"),
        (lambda: EntropyThreshold([1, 2, 4], [1.0, 0.5]), "non-decreasing"),
        (lambda: EntropyThreshold([1, 2], [[0.5], [0.1, 0.2]]), r"layer 1"),
        (lambda: EntropyThreshold([1, 2], [0.5], temperature=0), "temperature"),
        (lambda: EntropyThreshold([], []), "non-empty"),
        (lambda: TopP(1.5), "0 < p <= 1"),
        (lambda: TopP(0.5, min_k=3, max_k=2), "max_k"),
        (lambda: RatioSkip(1.5), "beta"),
        (lambda: EntropyThreshold.from_fractions([1, 2], [0.5], 1), "num_experts"),
    ],
)
def test_bad_policy_arguments(build, message):
    with pytest.raises(PolicyError, match=message):
        build()


def test_kmax_larger_than_n_and_missing_native_k():
    p = torch.full((2, 4), 0.25)
    with pytest.raises(PolicyError, match="only 4"):
        EntropyThreshold([1, 8], [0.5])(p)
    with pytest.raises(PolicyError, match="native k"):
        TopP(0.5)(p)


def test_empty_input_routes_to_empty():
    d = EntropyThreshold([1, 2], [0.5])(torch.zeros(0, 8))
    assert d.indices.shape == (0, 2) and d.k.shape == (0,)


@pytest.mark.parametrize(
    "policy",
    [FixedTopK(2), EntropyThreshold([1, 2], [[0.5], [0.7]], temperature=1.5), TopP(0.7, 1, 4), RatioSkip([0.1, 0.2], max_k=2)],
)
def test_dict_round_trip(policy):
    assert policy_from_dict(policy.to_dict()) == policy


def test_unknown_rule():
    with pytest.raises(PolicyError, match="known rules"):
        policy_from_dict({"rule": "magic"})

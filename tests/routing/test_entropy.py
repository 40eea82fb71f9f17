import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adaptk import routing_entropy
from adaptk.errors import RoutingInputError
from adaptk.routing import tempered


def _np_entropy(p):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)


@pytest.mark.parametrize("n", [2, 8, 64])
def test_uniform_is_log_n_and_one_hot_is_zero(n):
    uniform = torch.full((3, n), 1.0 / n)
    torch.testing.assert_close(routing_entropy(uniform), torch.full((3,), math.log(n)))
    torch.testing.assert_close(routing_entropy(uniform, base="bits"), torch.full((3,), math.log2(n)))
    torch.testing.assert_close(routing_entropy(uniform, normalized=True), torch.ones(3))
    one_hot = torch.eye(n)
    assert torch.equal(routing_entropy(one_hot), torch.zeros(n))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(2, 40), st.integers(0, 2**16), st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_matches_numpy_and_is_float32(t, n, seed, dtype):
    logits = torch.randn(t, n, generator=torch.Generator().manual_seed(seed)) * 3
    p = logits.softmax(-1).to(dtype)
    h = routing_entropy(p)
    assert h.dtype == torch.float32 and h.shape == (t,)
    np.testing.assert_allclose(h.numpy(), _np_entropy(p.float().numpy()), rtol=1e-5, atol=1e-6)
    # rounded to bfloat16/float16 the rows need not sum to 1: -Σ p log p over n entries of mass m
    # is at most m log(n / m) (all equal), which is log n for m = 1
    mass = p.float().sum(-1)
    assert (h >= -1e-6).all() and (h <= mass * torch.log(n / mass) + 1e-5).all()


def test_bad_input():
    with pytest.raises(RoutingInputError, match="base"):
        routing_entropy(torch.ones(1, 2) / 2, base="dits")
    with pytest.raises(RoutingInputError, match="tokens, experts"):
        routing_entropy(torch.ones(2))


def test_temperature_is_softmax_of_scaled_logits():
    logits = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    for tau in (0.5, 2.0):
        torch.testing.assert_close(tempered(logits.softmax(-1), tau), (logits / tau).softmax(-1))
    p = logits.softmax(-1)
    assert tempered(p, 1.0) is p


_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 64), st.integers(0, 2**16), st.floats(0.05, 20.0), st.sampled_from(_DTYPES))
@example(5, 2, 5, 0.05, torch.bfloat16)  # rows of mass 0.998 > log 2 by 6e-4
def test_valid_distributions_have_entropy_in_zero_log_n(t, n, seed, scale, dtype):
    # any softmax output, sharp (large scale) or flat, rounded to any float dtype, is accepted
    logits = torch.randn(t, n, generator=torch.Generator().manual_seed(seed)) * scale
    p = logits.softmax(-1).to(dtype)
    h = routing_entropy(p)
    # -sum p log p of the row as given: a rounded row of mass m (within the accepted tolerance of 1)
    # has at most m log(n / m), which exceeds log n by up to ~(1 - m) when m < 1 (bfloat16 [0.5, 0.498])
    mass = p.float().sum(-1)
    bound = mass * torch.log(n / mass) + 1e-5
    assert ((h >= 0) & (h <= bound)).all()
    hn = routing_entropy(p, normalized=True)
    assert ((hn >= 0) & (hn <= (bound / math.log(n) if n > 1 else 1e-5))).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(2, 64), st.integers(0, 2**16), st.sampled_from(_DTYPES),
       st.sampled_from(["negative", "scaled", "logits", "nan", "inf"]))
def test_invalid_input_raises(t, n, seed, dtype, kind):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(t, n, generator=g).softmax(-1)
    row, col = int(torch.randint(t, (1,), generator=g)), int(torch.randint(n, (1,), generator=g))
    if kind == "negative":  # one entry made negative, the row still summing to 1
        shift = float(p[row, col]) + 0.25
        p[row, col] -= shift  # -0.25
        p[row, (col + 1) % n] += shift
    elif kind == "scaled":  # unnormalised: the row sums to 1.5 or 0.5
        p[row] *= 1.5 if seed % 2 else 0.5
    elif kind == "logits":
        p = torch.randn(t, n, generator=g) * 3
        p[row, col] = -1.0  # at least one negative score
    else:
        p[row, col] = float("nan") if kind == "nan" else float("inf")
    with pytest.raises(RoutingInputError, match="softmax probabilities"):
        routing_entropy(p.to(dtype))


def test_unnormalised_input_error_names_the_row_and_its_sum():
    p = torch.full((3, 4), 0.25)
    p[2] = 0.5  # sums to 2
    with pytest.raises(RoutingInputError, match=r"row 2 sums to 2, not 1"):
        routing_entropy(p)
    with pytest.raises(RoutingInputError, match="floating"):
        routing_entropy(torch.ones(2, 2, dtype=torch.long))
    assert routing_entropy(torch.zeros(0, 4)).shape == (0,)


def test_entropy_nats_is_the_unchecked_hot_path():
    # documented: no validation (a NaN row stays NaN, the patch counts it and routes it with kmax)
    from adaptk.routing.entropy import entropy_nats

    p = torch.tensor([[0.5, 0.5], [float("nan"), 0.5]])
    h = entropy_nats(p)
    assert math.isclose(float(h[0]), math.log(2), rel_tol=1e-6) and math.isnan(float(h[1]))


def test_entropy_threshold_with_temperature_routes_nan_rows_to_kmax():
    # the policy's own (tempered) entropy goes through the unchecked path: a NaN row is not an error
    from adaptk import EntropyThreshold

    pol = EntropyThreshold((1, 2), (1.0,), temperature=2.0)  # row 0: H about 0.8 nats after tempering
    probs = torch.tensor([[0.97, 0.01, 0.01, 0.01], [float("nan")] * 4])
    k = pol.choose_k(probs, probs, 0, 2)
    assert k.tolist() == [1, 2]

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
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

"""``decide``: the one-comparison mask of entropy-step policies equals the ``choose_k`` route."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptk import EntropyThreshold, FixedTopK
from adaptk.routing.select import decide, keep_all


class ViaChooseK:
    """The same policy with its rank thresholds hidden: ``decide`` must call ``choose_k``."""

    def __init__(self, policy):
        self.policy = policy

    def kmax(self, native_k):
        return self.policy.kmax(native_k)

    def choose_k(self, *args, **kwargs):
        return self.policy.choose_k(*args, **kwargs)

    def rank_thresholds(self, layer, native_k, device):
        return None


def _policies(n: int, layers: int):
    log_n = math.log(n)
    return [
        FixedTopK(2),
        EntropyThreshold([1, 2], [0.5 * log_n]),
        EntropyThreshold([1, 4, 5], [0.3 * log_n, 0.7 * log_n]),  # gaps in k: ranks 1-3 share a threshold
        EntropyThreshold([2, 3], [0.6 * log_n]),  # never fewer than 2
        EntropyThreshold([1, 2, 3], [0.4 * log_n, 0.4 * log_n]),  # equal thresholds: k jumps by 2
        EntropyThreshold([1, 2], [tuple([0.1 * (i + 1) * log_n]) for i in range(layers)]),  # per layer
    ]


@settings(max_examples=80, deadline=None)
@given(t=st.integers(1, 10), n=st.integers(6, 12), seed=st.integers(0, 2**16),
       scale=st.sampled_from([0.1, 1.0, 5.0]), sorted_topk=st.booleans(), nan_rows=st.integers(0, 2))
def test_rank_thresholds_route_as_choose_k(t, n, seed, scale, sorted_topk, nan_rows):
    g = torch.Generator().manual_seed(seed)
    probs = (torch.randn(t, n, generator=g) * scale).softmax(-1)
    probs[: min(nan_rows, t)] = float("nan")  # non-finite router output: kmax, as choose_k gives
    rank = probs + 0.01 * torch.rand(t, n, generator=g)  # a ranking other than the distribution
    for layer in range(2):
        for policy in _policies(n, layers=2):
            assert policy.rank_thresholds(layer, 2, probs.device) is not None
            kw = dict(layer=layer, native_k=2, sorted_topk=sorted_topk)
            for r in (probs, rank):
                fast, slow = decide(policy, probs, r, **kw), decide(ViaChooseK(policy), probs, r, **kw)
                assert fast.chosen_k is None and slow.chosen_k is not None
                torch.testing.assert_close(fast.indices, slow.indices, rtol=0, atol=0)
                torch.testing.assert_close(fast.drop, slow.drop, rtol=0, atol=0)
                torch.testing.assert_close(fast.k, slow.k, rtol=0, atol=0)


def test_tempered_entropy_threshold_uses_choose_k():
    policy = EntropyThreshold([1, 2], [0.5], temperature=2.0)
    assert policy.rank_thresholds(0, 2, torch.device("cpu")) is None
    probs = torch.randn(5, 8).softmax(-1)
    sel = decide(policy, probs, probs, layer=0, native_k=2, sorted_topk=True)
    assert sel.chosen_k is not None
    torch.testing.assert_close(sel.k, policy.choose_k(probs, probs, 0, 2).clamp(1, 2))


def test_top_probs_are_the_candidates_probabilities():
    probs = torch.randn(6, 8).softmax(-1)
    sel = decide(FixedTopK(3), probs, probs, layer=0, native_k=2, sorted_topk=True)
    torch.testing.assert_close(sel.top_probs, probs.gather(1, sel.candidates), rtol=0, atol=0)
    other = decide(FixedTopK(3), probs, probs + 0.1, layer=0, native_k=2, sorted_topk=True)
    assert other.top_probs is None  # ranked by other scores: the family gathers


def test_keep_all():
    cand = torch.tensor([[3, 1], [0, 2]])
    sel = keep_all(cand)
    assert not sel.drop.any() and sel.k.tolist() == [2, 2] and torch.equal(sel.indices, cand)


def test_entropy_exactly_at_a_threshold_takes_the_larger_k():
    from adaptk import routing_entropy

    probs = torch.randn(7, 8, generator=torch.Generator().manual_seed(0)).softmax(-1)
    h = sorted(routing_entropy(probs).tolist())
    policy = EntropyThreshold([1, 2, 3], [h[2], h[4]])  # rows 2 and 4 sit exactly on a threshold
    fast = decide(policy, probs, probs, layer=0, native_k=2, sorted_topk=True)
    slow = decide(ViaChooseK(policy), probs, probs, layer=0, native_k=2, sorted_topk=True)
    torch.testing.assert_close(fast.k, slow.k, rtol=0, atol=0)
    assert sorted(fast.k.tolist()) == [1, 1, 2, 2, 3, 3, 3]

"""``LayerStats``: small updates are folded later, with the counts one update of everything gives."""

import torch

from adaptk.stats import FOLD_TOKENS, LayerStats

N, K = 6, 3


def _calls(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in sizes:
        entropy = torch.rand(t, generator=g) * 2
        idx = torch.randint(0, N + 1, (t, K), generator=g)  # sentinel N = dropped slot
        idx[:, 0] = idx[:, 0].clamp_max(N - 1)  # every token keeps its first slot
        out.append((entropy, idx))
    return out


def _report(calls):
    s = LayerStats(0, "layer", N, 2, K, torch.device("cpu"))
    for e, i in calls:
        s.update(e, i)
    return s, s.report()


def test_small_updates_fold_to_the_counts_of_one_update():
    calls = _calls([1] * (FOLD_TOKENS + 37) + [5, 300, 2])  # crosses the fold limit, then leaves some pending
    _, parts = _report(calls)
    _, whole = _report([(torch.cat([e for e, _ in calls]), torch.cat([i for _, i in calls]))])
    ent = torch.cat([e for e, _ in calls]).double()
    idx = torch.cat([i for _, i in calls])
    k = (idx < N).sum(-1)
    assert parts.tokens == whole.tokens == ent.numel()
    assert parts.k_histogram == whole.k_histogram == torch.bincount(k, minlength=K + 1).tolist()
    assert parts.expert_counts == whole.expert_counts == torch.bincount(idx[idx < N], minlength=N).tolist()
    assert abs(parts.entropy_mean - float(ent.mean())) < 1e-9
    assert abs(parts.entropy_std - float(ent.std(unbiased=False))) < 1e-6


def test_report_folds_what_is_pending_and_reset_drops_it():
    s, first = _report(_calls([1, 1, 1]))
    assert first.tokens == 3 and sum(first.k_histogram) == 3
    s.update(*_calls([2], seed=1)[0])
    s.reset()
    again = s.report()
    assert again.tokens == 0 and sum(again.k_histogram) == 0 and sum(again.expert_counts) == 0


def test_pending_updates_hold_no_autograd_graph():
    s = LayerStats(0, "layer", N, 2, K, torch.device("cpu"))
    e = torch.rand(4, requires_grad=True) * 1.0
    s.update(e, _calls([4])[0][1])
    assert not s._pending[0][0].requires_grad

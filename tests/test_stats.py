"""``LayerStats``: small updates are folded later, with the counts one update of everything gives."""

import torch
from threads import run_in_threads

from adaptk.stats import FOLD_TOKENS, LayerStats

N, K = 6, 3


def _calls(sizes, seed=0):
    """(entropy [T], candidates [T, K], drop [T, K]) per call; every token keeps its first slot."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in sizes:
        entropy = torch.rand(t, generator=g) * 2
        cand = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(t)])  # [T, K]
        drop = torch.rand(t, K, generator=g) < 0.4
        drop[:, 0] = False
        out.append((entropy, cand, drop))
    return out


def _report(calls):
    s = LayerStats(0, "layer", N, 2, K, torch.device("cpu"))
    for call in calls:
        s.update(*call)
    return s, s.report()


def _cat(calls):
    return tuple(torch.cat(parts) for parts in zip(*calls))


def test_small_updates_fold_to_the_counts_of_one_update():
    calls = _calls([1] * (FOLD_TOKENS + 37) + [5, 300, 2])  # crosses the fold limit, then leaves some pending
    _, parts = _report(calls)
    _, whole = _report([_cat(calls)])
    ent, cand, drop = _cat(calls)
    ent = ent.double()
    idx = torch.where(drop, N, cand)  # sentinel N where dropped
    k = (~drop).sum(-1)
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
    s.update(e, *_calls([4])[0][1:])
    assert not s._pending[0][0].requires_grad


def test_deferred_logit_checks_count_nonfinite_tokens_across_folds():
    sizes = [1] * (FOLD_TOKENS + 3) + [7]
    calls = _calls(sizes)
    s = LayerStats(0, "layer", N, 2, K, torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    bad = 0
    for i, call in enumerate(calls):
        logits = torch.randn(call[0].shape[0], N, generator=g)
        if i % 5 == 0:  # NaN, +Inf and -Inf in one token each
            logits[0, i % N] = (float("nan"), float("inf"), float("-inf"))[i % 3]
            bad += 1
        s.update(*call, logits=logits.requires_grad_())
    assert s._pending_logits and not any(t.requires_grad for t in s._pending_logits)
    report = s.report()
    assert report.nonfinite_tokens == bad and report.tokens == sum(sizes)
    s.reset()
    assert s.report().nonfinite_tokens == 0


def test_threads_updating_one_layer_count_every_token():
    """Threads serving one model share its layers' statistics: each update (and each fold of
    the pending ones) happens under the lock, so none is lost or folded twice (without it, this
    folds pending updates twice)."""
    stats = LayerStats(0, "layer", 8, 2, 2, "cpu")
    entropy, candidates, drop = torch.rand(1), torch.tensor([[1, 2]]), torch.tensor([[False, True]])
    calls, threads = 10000, 4

    def work():
        for _ in range(calls):
            stats.update(entropy, candidates, drop)
            stats.add_rows(torch.ones(8, dtype=torch.long))

    run_in_threads(work, threads)
    report = stats.report()
    assert report.tokens == sum(report.k_histogram) == report.k_histogram[1] == threads * calls
    assert report.expert_counts[1] == threads * calls and report.executed_pairs == threads * calls * 8

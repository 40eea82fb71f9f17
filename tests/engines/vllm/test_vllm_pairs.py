"""pairs.run_kept: one kernel call over the kept pairs equals a plain per-slot reference, and the
rows reaching the kernel are the kept pairs (Σ k), counted per expert."""

import pytest
import torch

from adaptk.engines.vllm.pairs import DROPPED, run_kept

T, H, N, K = 7, 5, 4, 2


def _experts(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, H, H, generator=g, dtype=torch.float64)


def _kernel(weights_of_experts, calls):
    """A plain experts kernel: row r gets Σ_s w[r, s] * (x[r] @ W[ids[r, s]]); records its calls."""

    def kernel(x, w, ids):
        calls.append(ids.clone())
        assert bool((ids >= 0).all()), "a dropped slot reached the kernel"
        out = torch.zeros(x.shape[0], H, dtype=x.dtype)
        for r in range(x.shape[0]):
            for s in range(ids.shape[1]):
                out[r] += w[r, s].to(x.dtype) * (x[r] @ weights_of_experts[int(ids[r, s])])
        return out

    return kernel


def _reference(x, w, ids, we):
    out = torch.zeros(x.shape[0], H, dtype=x.dtype)
    for t in range(x.shape[0]):
        for s in range(ids.shape[1]):
            if int(ids[t, s]) != DROPPED:
                out[t] += w[t, s].to(x.dtype) * (x[t] @ we[int(ids[t, s])])
    return out


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g, dtype=torch.float64)
    ids = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(T)]).to(torch.int32)
    w = torch.rand(T, K, generator=g)
    return x, w, ids


def test_dropped_slots_never_reach_the_kernel_and_rows_are_the_kept_pairs():
    x, w, ids = _inputs()
    ids[0, 1] = ids[3, 0] = ids[5, 1] = DROPPED
    we, calls = _experts(), []
    done = run_kept(_kernel(we, calls), x, w, ids, N)
    assert len(calls) == 1 and calls[0].shape == (int((ids >= 0).sum()), 1)  # one call, topk = 1
    torch.testing.assert_close(done.out, _reference(x, w, ids, we))
    kept = ids[ids >= 0].long()
    assert done.rows.tolist() == torch.bincount(kept, minlength=N).tolist()
    assert int(done.rows.sum()) == T * K - 3  # Σ k


def test_nothing_dropped_is_the_kernels_own_call():
    x, w, ids = _inputs(2)
    we, calls = _experts(), []
    done = run_kept(_kernel(we, calls), x, w, ids, N)
    assert len(calls) == 1 and calls[0] is not None and torch.equal(calls[0], ids)  # as it came
    torch.testing.assert_close(done.out, _reference(x, w, ids, we), rtol=0, atol=0)
    assert int(done.rows.sum()) == T * K


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_rows_are_summed_in_float32(dtype):
    x, w, ids = _inputs(3)
    ids[:, 1] = DROPPED  # every token keeps one expert
    ids[2, 1] = (int(ids[2, 0]) + 1) % N
    we = _experts().to(dtype)
    done = run_kept(_kernel(we, []), x.to(dtype), w, ids, N)
    assert done.out.dtype == dtype
    torch.testing.assert_close(done.out.double(), _reference(x.to(dtype).double(), w, ids, we.double()),
                               rtol=2e-2, atol=2e-2)

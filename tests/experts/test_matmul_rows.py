"""Dropped slots cost no expert FLOPs: count the rows that really reach the expert matmuls."""

import pytest
import torch
from tiny_models import tiny_model
from torch.overrides import TorchFunctionMode

import adaptk

GATE_UP_ROWS = 2 * 48  # intermediate 48: no other weight of the tiny model has 96 rows


class ExpertRowCounter(TorchFunctionMode):
    """Rows multiplied by a gate-up expert weight, over every matmul entry point."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "linear" and args[1].shape[0] == GATE_UP_ROWS:
            self.rows += args[0].reshape(-1, args[0].shape[-1]).shape[0]
        elif name in ("mm", "matmul", "__matmul__", "addmm") and args[-1].shape[-1] == GATE_UP_ROWS:
            self.rows += args[-2].shape[0]
        elif name in ("grouped_mm", "_grouped_mm") and args[1].shape[-1] == GATE_UP_ROWS:
            offs = kwargs.get("offs")
            self.rows += int(offs[-1]) if offs is not None else args[0].shape[0]
        return func(*args, **kwargs)


@pytest.mark.parametrize("impl", ["eager", None], ids=["eager", "default"])
def test_rows_in_expert_matmuls_equal_sum_of_k(impl):
    model = tiny_model("mixtral", experts_implementation=impl, intermediate_size=48)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    policy = adaptk.EntropyThreshold([1, 2], [1.7])
    with torch.no_grad(), adaptk.patch(model, policy) as handle:
        with ExpertRowCounter() as counter:
            model(ids)
        report = handle.stats()
    sum_k = sum(sum(k * c for k, c in enumerate(r.k_histogram)) for r in report.layers)
    assert 0 < report.compute_fraction < 1, "the policy should drop some slots on this model"
    assert counter.rows == sum_k == report.executed_pairs
    # the unpatched model multiplies every native slot
    with torch.no_grad(), ExpertRowCounter() as native:
        model(ids)
    assert native.rows == ids.numel() * 2 * len(report.layers)

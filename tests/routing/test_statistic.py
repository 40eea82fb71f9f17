"""The one protocol of the four routing-statistics collectors, and its helpers."""

import ast
import inspect

import pytest
import torch

import adaptk.routing.statistic as statistic
from adaptk.calibrate.collect import LayerRecorder
from adaptk.errors import AdaptkError
from adaptk.monitor.state import LayerState
from adaptk.routing.statistic import Statistic, StatisticError, check_shape, entries, merged
from adaptk.routing.stats import LayerStats
from adaptk.train.health import LoadAccumulator

METHODS = ("update", "compute", "merge", "reset", "state_dict", "load_state_dict")


def _collectors():
    return [LayerStats(0, "l", 4, 2, 2, "cpu"), LayerState(0, "l", 4, 2), LayerRecorder(0, 4, 2, 100),
            LoadAccumulator(4)]


def test_every_collector_is_a_statistic_and_an_object_lacking_a_method_is_not():
    for c in _collectors():
        assert isinstance(c, Statistic), type(c).__name__
        assert all(callable(getattr(c, m)) for m in METHODS)

    class Partial:
        def update(self): ...
        def compute(self): ...

    assert not isinstance(Partial(), Statistic)


def test_every_collector_loads_its_own_empty_state_and_refuses_another_collectors():
    collectors = _collectors()
    for c in collectors:
        c.load_state_dict(c.state_dict())
        for other in collectors:
            if type(other) is not type(c):
                with pytest.raises(StatisticError):
                    c.load_state_dict(other.state_dict())


def test_merged_merges_in_order_into_the_first():
    accs = [LoadAccumulator(3) for _ in range(3)]
    for i, a in enumerate(accs):
        a.update(torch.full((2, 1), i), torch.ones(2, 1, dtype=torch.bool))
    out = merged(accs[0], accs[1:])
    assert out is accs[0] and out.compute().expert_load == [2, 2, 2]


def test_helpers_name_what_differs_or_lacks():
    with pytest.raises(StatisticError, match=r"num_experts 4 here, 5 in the other"):
        check_shape("X", {"num_experts": 4, "bins": 2}, {"num_experts": 5, "bins": 2}, "the other")
    check_shape("X", {"num_experts": 4}, {"num_experts": 4, "more": 1}, "the other")
    with pytest.raises(StatisticError, match="lacks b, c"):
        entries("X", {"a": 1}, ["a", "b", "c"])
    with pytest.raises(StatisticError, match="got list"):
        entries("X", [1], ["a"])
    assert issubclass(StatisticError, AdaptkError)


def test_the_protocol_module_imports_no_tensor_library():
    tree = ast.parse(inspect.getsource(statistic))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "collections.abc", "typing", "adaptk.errors"}, names

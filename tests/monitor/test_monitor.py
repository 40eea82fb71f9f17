"""RoutingMonitor on tiny models of several families, native and patched."""

import pytest
import torch
from tiny_models import tiny_model

import adaptk
from adaptk.monitor import MonitorError, RoutingMonitor
from adaptk.monitor.runner import chunks, monitor_ids

FAMILIES = ["mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss"]


def ids(seed=0, b=2, t=16):
    return torch.randint(0, 64, (b, t), generator=torch.Generator().manual_seed(seed))


def hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
def test_native_and_patched(family):
    model = tiny_model(family)
    x = ids()
    with torch.no_grad():
        ref = model(x).logits
    hooks_before = hook_count(model)
    mon = RoutingMonitor()
    with mon.attach(model), torch.no_grad():
        seen = model(x).logits
    assert torch.equal(seen, ref)  # monitoring changes nothing
    assert hook_count(model) == hooks_before
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref)  # detached: bit for bit
    native = mon.compute()
    assert native.fingerprint["architecture"] == type(model).__name__
    for s in native.layers:
        assert s.tokens == x.numel() and s.nonfinite_tokens == 0
        assert s.average_k == s.native_k
        assert sum(s.expert_counts) == x.numel() * s.native_k
        assert 0 <= s.entropy_normalized <= 1 and s.mutual_information >= 0

    with adaptk.patch(model, adaptk.TopP(0.5)) as handle, RoutingMonitor().attach(model) as pmon, torch.no_grad():
        model(x)
    patched = pmon.compute()
    for s, r in zip(patched.layers, handle.stats().layers, strict=True):
        assert s.k_histogram[: len(r.k_histogram)] == r.k_histogram  # agrees with adaptk's own stats
        assert s.expert_counts == r.expert_counts
        assert s.entropy_mean == pytest.approx(r.entropy_mean, rel=1e-5)
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref)


def test_attach_before_patch_and_errors():
    model = tiny_model("mixtral")
    mon = RoutingMonitor().attach(model)
    with pytest.raises(MonitorError):
        mon.attach(model)
    with adaptk.patch(model, adaptk.TopP(0.3)), torch.no_grad():
        model(ids())
    mon.detach()
    assert hook_count(model) == 0
    assert mon.compute().layers[0].average_k < 2
    with pytest.raises(MonitorError):
        RoutingMonitor().compute()
    with pytest.raises(ValueError):
        RoutingMonitor(bins=1)


def test_merge_of_two_monitors_equals_one():
    model = tiny_model("qwen2_moe")
    a, b, whole = RoutingMonitor(), RoutingMonitor(), RoutingMonitor()
    monitor_ids(model, ids(1).flatten().tolist(), a, window=8)
    monitor_ids(model, ids(2).flatten().tolist(), b, window=8)
    monitor_ids(model, ids(1).flatten().tolist() + ids(2).flatten().tolist(), whole, window=8)
    a.merge(b)
    for x, y in zip(a.compute().layers, whole.compute().layers, strict=True):
        assert x.expert_counts == y.expert_counts and x.entropy_histogram == y.entropy_histogram
        assert x.tokens == y.tokens and x.entropy_mean == pytest.approx(y.entropy_mean, rel=1e-6)
    c = RoutingMonitor()
    c.attach(model).detach()
    c.merge_state_dict(whole.state_dict())
    assert c.compute().layers[0].tokens == whole.compute().layers[0].tokens
    other = RoutingMonitor()
    monitor_ids(tiny_model("mixtral"), [1, 2, 3], other)
    with pytest.raises(MonitorError):
        a.merge(other)


def test_windows_are_bounded_and_trend():
    model = tiny_model("mixtral")
    mon = RoutingMonitor(window_tokens=16, max_windows=3)
    monitor_ids(model, list(range(64)) * 2, mon, window=16, batch_size=1)
    wins = mon.windows(0)
    assert [w for w, _ in wins] == [5, 6, 7] and all(s.tokens == 16 for _, s in wins)
    trend = mon.trends("max_over_mean")
    assert len(trend[1]) == 3
    assert mon.compute().layers[0].tokens == 128  # totals keep every token
    mon.check_alerts()
    mon.reset()
    assert mon.windows(0) == [] and mon.compute().layers[0].tokens == 0
    with pytest.raises(MonitorError):
        mon.trends("nope")


def test_nan_router_counted_per_layer():
    model = tiny_model("mixtral")
    layers = adaptk.models.find_moe_layers(model)
    with torch.no_grad():
        layers[0].router.weight[0, 0] = float("nan")
    mon = RoutingMonitor()
    with mon.attach(model), torch.no_grad():
        model(ids())
    s0, s1 = mon.compute().layers
    assert s0.nonfinite_tokens == 32 and s0.tokens == 0
    assert s1.nonfinite_tokens + s1.tokens == 32  # NaN hidden states may reach layer 1


def test_chunks():
    got = [b.tolist() for b in chunks(list(range(10)), window=4, batch_size=1)]
    assert got == [[[0, 1, 2, 3]], [[4, 5, 6, 7]]]
    assert [b.shape for b in chunks([1, 2], window=4, batch_size=2)] == [torch.Size([1, 2])]

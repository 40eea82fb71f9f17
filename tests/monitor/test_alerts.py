"""Alert rules on synthetic windows: a collapse fires, healthy routing does not."""

import logging

import pytest
import torch

from adaptk.monitor import AlertConfig, LayerState, evaluate_alerts

N = 8


def window(temp, seed, t=400, collapse_to=None):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, N, generator=g) / temp
    if collapse_to is not None:
        logits[:, collapse_to] += 20.0
        logits[:, (collapse_to + 1) % N] += 10.0  # top-2 always lands on the same two experts
    probs = torch.softmax(logits, -1)
    s = LayerState(0, "l0", N, 2)
    s.update(probs, probs.topk(2, -1).indices)
    return s.summary()


def test_healthy_windows_raise_nothing():
    wins = [(i, window(1.0, i)) for i in range(5)]
    assert evaluate_alerts(wins) == []


def test_collapse_fires_every_rule(caplog):
    wins = [(0, window(1.0, 0)), (1, window(1.0, 1))] + [(i, window(1.0, i, collapse_to=3)) for i in range(2, 6)]
    with caplog.at_level(logging.WARNING):
        alerts = evaluate_alerts(wins, AlertConfig(skew_windows=3))
    rules = {a.rule for a in alerts}
    assert {"entropy_drop", "load_skew", "dead_expert", "entropy_collapse"} <= rules
    drop = next(a for a in alerts if a.rule == "entropy_drop")
    assert drop.window == 2 and drop.layer == 0
    skew = [a for a in alerts if a.rule == "load_skew"]
    assert [a.window for a in skew] == [4, 5] and all(a.expert == 3 for a in skew)
    assert all(a.expert != 3 for a in alerts if a.rule == "dead_expert")
    assert "routing alert" in caplog.text
    # only new windows are judged
    assert all(a.window > 4 for a in evaluate_alerts(wins, since=4))


def test_uniform_router_fires():
    alerts = evaluate_alerts([(0, window(1000.0, 0))])
    assert [a.rule for a in alerts] == ["entropy_uniform"]


def test_small_windows_not_judged():
    assert evaluate_alerts([(0, window(1.0, 0, t=4, collapse_to=1))]) == []


@pytest.mark.parametrize("bad", [dict(entropy_drop=1.5), dict(skew_threshold=0.5), dict(skew_windows=0),
                                 dict(entropy_low=0.9, entropy_high=0.5), dict(min_tokens=0)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        AlertConfig(**bad)


def test_monitor_check_alerts_on_collapse():
    from adaptk.monitor import RoutingMonitor
    from adaptk.monitor.monitor import _Layer

    mon = RoutingMonitor(window_tokens=100)
    mon.fingerprint = {"architecture": "synthetic"}
    mon._layers = [_Layer(0, "l0", N, 2, mon.config, "cpu")]
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        logits = torch.randn(100, N, generator=g)
        if step >= 2:
            logits[:, 5] += 20
        p = torch.softmax(logits, -1)
        mon.update(0, p, p.topk(2, -1).indices)
    alerts = mon.check_alerts()
    assert any(a.rule == "entropy_collapse" and a.window == 2 for a in alerts)
    assert mon.check_alerts() == []  # nothing new
    assert len(mon.alert_log) == len(alerts)

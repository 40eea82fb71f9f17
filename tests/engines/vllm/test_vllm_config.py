import pytest

from adaptk.engines.vllm.config import ServingConfig, ServingConfigError, from_env


def test_nothing_set_is_disabled():
    assert not from_env({}).enabled
    assert not from_env({"ADAPTK_MONITOR": "0"}).enabled


def test_monitor_and_policy():
    assert from_env({"ADAPTK_MONITOR": "1"}) == ServingConfig(None, True, 1.0)
    cfg = from_env({"ADAPTK_POLICY": "p.json", "ADAPTK_METRICS_INTERVAL": "0.5"})
    assert cfg.enabled and cfg.policy_path == "p.json" and cfg.interval == 0.5
    assert from_env(cfg.to_env()) == cfg


@pytest.mark.parametrize("env", [{"ADAPTK_MONITOR": "maybe"}, {"ADAPTK_METRICS_INTERVAL": "x"},
                                 {"ADAPTK_METRICS_INTERVAL": "-1"}, {"ADAPTK_POLICY": " "}])
def test_bad_values_say_what_to_do(env):
    with pytest.raises(ServingConfigError, match="ADAPTK_"):
        from_env(env)

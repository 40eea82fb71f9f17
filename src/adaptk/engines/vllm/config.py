"""What the vLLM plugin does, read from the environment once per process (validated here).

- ``ADAPTK_POLICY=policy.json``: route every MoE layer with the policy of that policy file (the
  versioned file ``adaptk calibrate`` writes), checked against the served model at start;
- ``ADAPTK_MONITOR=1``: measure only (routing stays vLLM's native top-k), publishing metrics;
- ``ADAPTK_METRICS_INTERVAL=SECONDS`` (default 1): how often a layer publishes its counts.

With neither ``ADAPTK_POLICY`` nor ``ADAPTK_MONITOR`` set the plugin does nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from adaptk.errors import AdaptkError

ENV_POLICY, ENV_MONITOR, ENV_INTERVAL = "ADAPTK_POLICY", "ADAPTK_MONITOR", "ADAPTK_METRICS_INTERVAL"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class ServingConfigError(AdaptkError, ValueError):
    """An ADAPTK_* environment variable of the vLLM plugin holds a value it cannot use."""


@dataclass(frozen=True)
class ServingConfig:
    policy_path: str | None = None  # None: vLLM's native routing
    monitor: bool = False  # publish metrics (always on with a policy)
    interval: float = 1.0  # seconds between a layer's publications

    def __post_init__(self) -> None:
        if not (isinstance(self.interval, int | float) and math.isfinite(self.interval) and self.interval >= 0):
            raise ServingConfigError(f"{ENV_INTERVAL} must be a number of seconds >= 0, got {self.interval!r}")
        if self.policy_path is not None and not str(self.policy_path).strip():
            raise ServingConfigError(f"{ENV_POLICY} is set but empty; give the policy file's path or unset it")

    @property
    def enabled(self) -> bool:
        return self.policy_path is not None or self.monitor

    def to_env(self) -> dict[str, str]:
        """The environment that makes the plugin run with this configuration."""
        env = {ENV_MONITOR: "1" if self.monitor else "0", ENV_INTERVAL: repr(float(self.interval))}
        if self.policy_path is not None:
            env[ENV_POLICY] = str(self.policy_path)
        return env


def from_env(env: Mapping[str, str] | None = None) -> ServingConfig:
    """The configuration in ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    flag = env.get(ENV_MONITOR, "").strip().lower()
    if flag not in _TRUE + _FALSE:
        raise ServingConfigError(f"{ENV_MONITOR} must be one of 1/0, true/false, yes/no, on/off; got {flag!r}")
    raw = env.get(ENV_INTERVAL, "1")
    try:
        interval = float(raw)
    except ValueError:
        raise ServingConfigError(f"{ENV_INTERVAL} must be a number of seconds, got {raw!r}") from None
    return ServingConfig(policy_path=env.get(ENV_POLICY), monitor=flag in _TRUE, interval=interval)

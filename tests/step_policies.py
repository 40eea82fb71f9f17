"""The policies the C routers take (k a step function of the entropy), shared by the routing tests."""

from __future__ import annotations

import math

from adaptk import EntropyThreshold, FixedTopK
from adaptk.routing.policies import Policy

KINDS = ("fixed", "two", "steps")


def step_policy(kind: str, k: int, n: int) -> Policy:
    """Up to k of n experts: "fixed" keeps k; "two" keeps 1 below half of log n nats, else k;
    "steps" keeps 1, 2 or k (thresholds at 0.3 and 0.6 of log n). k = 1 is always fixed, and
    "steps" with k < 3 is "two"."""
    log_n = math.log(max(n, 2))
    if kind == "fixed" or k == 1:
        return FixedTopK(k)
    if kind == "two" or k < 3:
        return EntropyThreshold([1, k], [0.5 * log_n])
    return EntropyThreshold([1, 2, k], [0.3 * log_n, 0.6 * log_n])

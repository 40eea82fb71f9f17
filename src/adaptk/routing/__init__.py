"""Routing math: entropy, policies, and the selection of kept experts."""

from adaptk.routing.entropy import routing_entropy, tempered
from adaptk.routing.policies import (
    POLICIES,
    EntropyThreshold,
    FixedTopK,
    Policy,
    RatioSkip,
    TopP,
    policy_from_dict,
    register_policy,
)
from adaptk.routing.select import RoutingDecision, Selection, decide

__all__ = [
    "POLICIES",
    "EntropyThreshold",
    "FixedTopK",
    "Policy",
    "RatioSkip",
    "RoutingDecision",
    "Selection",
    "TopP",
    "decide",
    "policy_from_dict",
    "register_policy",
    "routing_entropy",
    "tempered",
]

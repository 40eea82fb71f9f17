"""Routing policies: how many experts each token keeps (one module per policy, ``base`` for the
class they share and the ``POLICIES`` registry policy files are loaded through)."""

from adaptk.routing.policies.base import POLICIES, Policy, policy_from_dict, register_policy
from adaptk.routing.policies.entropy import EntropyThreshold
from adaptk.routing.policies.fixed import FixedTopK
from adaptk.routing.policies.ratio_skip import RatioSkip
from adaptk.routing.policies.top_p import TopP

__all__ = ["POLICIES", "EntropyThreshold", "FixedTopK", "Policy", "RatioSkip", "TopP", "policy_from_dict",
           "register_policy"]

"""``fixed``: every token keeps its top k experts (the baseline; not fitted, so not a strategy)."""

from adaptk.routing import FixedTopK
from adaptk.rules.base import Flag, Rule
from adaptk.rules.registry import register_rule

RULE = register_rule(Rule(
    name="fixed",
    policy=FixedTopK,
    flag=Flag("--fixed", "K", "FixedTopK(K)", lambda k, args, n: FixedTopK(k), type=int),
))

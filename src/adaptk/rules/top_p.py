"""``top_p``: post-hoc top-p, p bisected on the statistics for a target average k."""

from adaptk.calibrate.strategies import top_p_for_avg_k
from adaptk.routing import TopP
from adaptk.rules.base import Flag, Rule, SweepEntry
from adaptk.rules.registry import register_rule

RULE = register_rule(Rule(
    name="top_p",
    policy=TopP,
    fit=lambda f, t: top_p_for_avg_k(f.stats, t),
    needs_target=True,
    sweep=(SweepEntry("top_p", lambda f, t: top_p_for_avg_k(f.stats, t)),),
    flag=Flag("--top-p", "P", "TopP(P)", lambda p, args, n: TopP(p)),
))

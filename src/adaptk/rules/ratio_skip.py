"""``ratio_skip``: ratio skipping (Lu et al. 2024), β bisected for a target average k, globally or per layer."""

from adaptk.calibrate.strategies import ratio_skip_for_avg_k
from adaptk.routing import RatioSkip
from adaptk.rules.base import Flag, Rule, SweepEntry
from adaptk.rules.registry import register_rule

RULE = register_rule(Rule(
    name="ratio_skip",
    policy=RatioSkip,
    fit=lambda f, t: ratio_skip_for_avg_k(f.stats, t, per_layer=f.per_layer),
    needs_target=True,
    sweep=(SweepEntry("ratio_skip", lambda f, t: ratio_skip_for_avg_k(f.stats, t), default=False),
           SweepEntry("ratio_skip_per_layer", lambda f, t: ratio_skip_for_avg_k(f.stats, t, per_layer=True))),
    flag=Flag("--ratio-skip", "BETA", "RatioSkip(BETA)", lambda beta, args, n: RatioSkip(beta)),
))

"""``ratio_skip_median``: Lu et al. 2024's own rule, β per layer = the median of w2/w1 (no target)."""

from adaptk.calibrate.strategies import ratio_skip_median
from adaptk.routing import RatioSkip
from adaptk.rules.base import Fitted, Rule
from adaptk.rules.registry import register_rule

RULE = register_rule(Rule(
    name="ratio_skip_median",
    policy=RatioSkip,
    calibration=lambda rule, job: Fitted(ratio_skip_median(job.stats)),
))

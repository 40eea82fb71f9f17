"""``theory``: entropy thresholds θ_i = α_i · log N (paper §4.2.1), nothing fitted to data."""

from adaptk.calibrate.errors import CalibrationError
from adaptk.calibrate.strategies import theory
from adaptk.routing import EntropyThreshold
from adaptk.rules.base import Fitted, Flag, Rule
from adaptk.rules.registry import register_rule


def _check(cfg) -> None:
    if not cfg.alphas:
        raise CalibrationError("strategy 'theory' needs --alphas (θ_i = α_i · log N)")


RULE = register_rule(Rule(
    name="theory",
    policy=EntropyThreshold,
    calibration=lambda rule, job: Fitted(theory(job.stats, job.k_values, job.cfg.alphas)),
    check=_check,
    flag=Flag("--alphas", "A", "EntropyThreshold.from_fractions with --k-values",
              lambda alphas, args, n: EntropyThreshold.from_fractions(args.k_values, alphas, n), nargs="+"),
))

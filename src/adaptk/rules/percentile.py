"""``percentile``: entropy thresholds at percentiles of the calibration entropies (paper §4.2.2),
for a target share of tokens per k or a target average k; globally or per layer."""

from adaptk.calibrate.strategies import entropy_for_avg_k, percentile_distribution
from adaptk.routing import EntropyThreshold
from adaptk.rules.base import CalibrationJob, Fitted, Rule, SweepEntry, calibrate_to_target
from adaptk.rules.registry import register_rule


def _calibrate(rule: Rule, job: CalibrationJob) -> Fitted:
    if job.cfg.target_distribution is None:
        return calibrate_to_target(rule, job)
    return Fitted(percentile_distribution(job.stats, job.k_values, job.cfg.target_distribution,
                                          per_layer=job.cfg.per_layer))


RULE = register_rule(Rule(
    name="percentile",
    policy=EntropyThreshold,
    fit=lambda f, t: entropy_for_avg_k(f.stats, f.k_values, t, per_layer=f.per_layer),
    calibration=_calibrate,
    needs_target=lambda cfg: cfg.target_distribution is None,
    target_hint=" (or --target-distribution)",
    target_range=lambda kv, native: (kv[0], kv[-1]),
    sweep=(SweepEntry("entropy_global", lambda f, t: entropy_for_avg_k(f.stats, f.k_values, t)),
           SweepEntry("entropy_per_layer", lambda f, t: entropy_for_avg_k(f.stats, f.k_values, t, per_layer=True))),
))

"""``quality``: the cheapest entropy thresholds whose quality loss (perplexity or KL to the full
model) meets a budget, found with patched forward passes; in the sweep, per-layer targets
allocated by each layer's quality sensitivity."""

from adaptk.calibrate.quality import QualityBudget, quality_constrained, targets_for_level
from adaptk.calibrate.search import bisect
from adaptk.calibrate.simulate import simulated_avg_k
from adaptk.calibrate.strategies import entropy_for_avg_k
from adaptk.routing import EntropyThreshold, Policy
from adaptk.rules.base import CalibrationJob, FitInputs, Fitted, Rule, SweepEntry
from adaptk.rules.registry import register_rule


def _calibrate(rule: Rule, job: CalibrationJob) -> Fitted:
    cfg = job.cfg
    res = quality_constrained(job.model, job.ids, job.stats, QualityBudget(cfg.max_ppl_increase, cfg.max_kl,
                                                                           cfg.confidence),
                              k_values=job.k_values, cfg=job.window, max_passes=cfg.max_passes,
                              progress=job.progress)
    return Fitted(res.policy, res.forward_passes,
                  {"metric": res.metric, "value": res.value, "upper_bound": res.upper, "confidence": cfg.confidence,
                   "measured_average_k": res.average_k, "trials": res.trials, "weights": res.weights})


def quality_alloc(f: FitInputs, target: float) -> Policy:
    """Per-layer average k lowered in proportion to each layer's weight, to an overall ``target``."""
    w = f.weights or [1.0] * len(f.stats.layers)
    make = lambda c: entropy_for_avg_k(f.stats, f.k_values, targets_for_level(c, w, f.k_values), per_layer=True)
    c = bisect(lambda c: simulated_avg_k(make(c), f.stats), 0.0, 1.0 / min(w), target, increasing=False, iters=30)
    return make(c)


RULE = register_rule(Rule(
    name="quality",
    policy=EntropyThreshold,
    calibration=_calibrate,
    check=lambda cfg: QualityBudget(cfg.max_ppl_increase, cfg.max_kl, cfg.confidence),
    sweep=(SweepEntry("entropy_quality_alloc", quality_alloc),),
))

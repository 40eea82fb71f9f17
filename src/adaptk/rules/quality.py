"""``quality``: the cheapest entropy thresholds whose quality loss (perplexity or KL to the full
model) meets a budget, found with patched forward passes; in the sweep, per-layer targets
allocated by each layer's quality sensitivity."""

from adaptk.calibrate.quality import QualityBudget, quality_constrained, targets_for_level
from adaptk.calibrate.search import bisect
from adaptk.calibrate.simulate import simulated_avg_k
from adaptk.calibrate.strategies import entropy_for_avg_k
from adaptk.calibrate.transfer import heldout_constrained
from adaptk.routing import EntropyThreshold, Policy
from adaptk.rules.base import CalibrationJob, FitInputs, Fitted, Rule, SweepEntry
from adaptk.rules.registry import register_rule


def _budget(cfg) -> QualityBudget:
    return QualityBudget(cfg.max_ppl_increase, cfg.max_kl, cfg.confidence)


def _calibration_scope(job: CalibrationJob) -> Fitted:
    """The budget holds on the calibration tokens (its upper confidence bound there)."""
    cfg = job.cfg
    res = quality_constrained(job.model, job.ids, job.stats, _budget(cfg), k_values=job.k_values, cfg=job.window,
                              max_passes=cfg.max_passes, progress=job.progress)
    return Fitted(res.policy, res.forward_passes, _measured(res, cfg))


def _heldout_scope(job: CalibrationJob) -> Fitted:
    """The budget holds on unseen documents: searched at the budget less a cross-validated margin."""
    cfg = job.cfg
    ids = job.calibration_ids if job.calibration_ids is not None else job.ids
    documents = job.documents if job.calibration_ids is not None else None
    out = heldout_constrained(job.model, ids, job.stats, _budget(cfg), documents=documents, k_values=job.k_values,
                              window=job.window.window, quality_tokens=job.ids.numel(), n_folds=cfg.heldout_folds,
                              max_passes=cfg.max_passes, progress=job.progress)
    return Fitted(out.final.policy, out.forward_passes, {**_measured(out.final, cfg), **out.details()})


def _measured(res, cfg) -> dict:
    return {"metric": res.metric, "value": res.value, "upper_bound": res.upper, "confidence": cfg.confidence,
            "measured_average_k": res.average_k, "trials": res.trials, "weights": res.weights}


# --budget-scope: where the quality budget is to hold (names: adaptk.calibrate.transfer.BUDGET_SCOPES)
SCOPES = {"heldout": _heldout_scope, "calibration": _calibration_scope}


def _calibrate(rule: Rule, job: CalibrationJob) -> Fitted:
    return SCOPES[job.cfg.budget_scope](job)


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
    check=_budget,
    sweep=(SweepEntry("entropy_quality_alloc", quality_alloc),),
))

"""Side by side: every rule at matched average k over several compute budgets -> a Pareto table.

Each adaptive rule is fit on the calibration statistics for the target average k and corrected
by real patched runs on calibration tokens until the measured average k is within ``tol``; it
is then evaluated on the evaluation tokens, whose achieved average k is reported next to it.
Fixed top-k can only take integer k: its points (native k, always k-1, ...) are listed at the
average k they have.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

import adaptk.calibrate as S  # default k values and the median rule, through calibrate's public face
from adaptk import rules as R
from adaptk.calibrate import (
    BudgetNotMetError,
    CalibrationError,
    RouterStats,
    match_avg_k,
)
from adaptk.measure import IntervalConfig, PerplexityResult, WindowConfig, measure
from adaptk.routing import FixedTopK, Policy

log = logging.getLogger(__name__)

RULES = R.sweep_names()  # every rule the sweep knows, from the rule registry
DEFAULT_RULES = R.default_sweep_names()


@dataclass(frozen=True)
class SweepConfig:
    fractions: tuple[float, ...] = (0.9, 0.75, 0.6)
    rules: tuple[str, ...] = DEFAULT_RULES
    median_rule: bool = True  # also the unmatched ratio-skip median rule of Lu et al. (its own k)
    tol: float = 0.01
    # per adaptive cell, controls at the rule's measured per-layer k shares (evaluate.controls)
    controls: tuple[str, ...] = ()
    control_seeds: int = 5
    control_rules: tuple[str, ...] | None = None  # the rules whose cells get controls (None: every adaptive rule)

    def __post_init__(self) -> None:
        R.check_sweep_names(self.rules)  # RuleError, a CalibrationError, naming the known rules
        from adaptk.evaluate.controls import CONTROLS

        if any(c not in CONTROLS for c in self.controls):
            raise CalibrationError(f"unknown controls {list(self.controls)}; choose from {list(CONTROLS)}")
        if self.control_rules is not None:
            R.check_sweep_names([r for r in self.control_rules if r != "ratio_skip_median"])
        if not isinstance(self.control_seeds, int) or self.control_seeds < 2:
            raise CalibrationError(f"control_seeds must be an integer >= 2 (a spread needs two), got {self.control_seeds!r}")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise CalibrationError(f"budget fractions must be in (0, 1], got {self.fractions}")


def rule_fitters(stats: RouterStats, kv: tuple[int, ...], weights: Sequence[float] | None
                 ) -> dict[str, Callable[[float], Policy]]:
    """Every sweep rule of the registry as target average k -> policy fitted on ``stats``."""
    return R.sweep_fitters(R.FitInputs(stats, kv, weights=weights))


def _row(rule: str, budget: float | None, target: float | None, policy: Policy, m, calib_k=None,
         passes=0, within=None) -> dict:
    r = {"rule": rule, "budget_fraction": budget, "target_avg_k": target, "policy": policy.to_dict(),
         "calib_avg_k": calib_k, "eval_avg_k": m.average_k, "ppl": m.ppl.ppl, "nll": m.ppl.nll,
         "compute_fraction": m.report.compute_fraction, "tokens_per_second": m.ppl.tokens_per_second,
         "match_passes": passes, "matched_within_tol": within,
         "layer_k_histogram": [lay.k_histogram for lay in m.report.layers]}  # what the controls match
    if target:
        r["eval_k_error"] = (m.average_k - target) / target
    return r


def pareto_sweep(model: nn.Module, calib_ids: torch.Tensor, eval_ids: torch.Tensor, stats: RouterStats,
                 cfg: SweepConfig, wcfg: WindowConfig, match_cfg: WindowConfig, *,
                 k_values: tuple[int, ...] | None = None, weights: Sequence[float] | None = None,
                 refine_on_eval: bool = False, progress: bool = False, baseline: PerplexityResult | None = None,
                 intervals: IntervalConfig | None = None) -> dict:
    """Every rule at every budget, matched in average k. ``refine_on_eval`` (for matching on the
    evaluation text, a compute budget only) corrects a policy whose average k on the whole
    evaluation text is still more than ``cfg.tol`` off the target with up to two more runs.
    With the native ``baseline`` run on ``eval_ids``, every row carries its perplexity increase with
    a paired interval and the rules of each budget are compared (``adaptk.evaluate.evidence``)."""
    from tqdm.auto import tqdm

    native = min(stats.native_k)
    kv = k_values or S.default_k_values(stats)
    rows, skipped, runs = [], [], []
    fixed = sorted({native, max(1, native - 1), 1})
    jobs = [("fixed_k", None, k) for k in reversed(fixed)]
    jobs += [(rule, f, None) for f in cfg.fractions for rule in cfg.rules]
    fitters = rule_fitters(stats, kv, weights)
    if cfg.median_rule:
        jobs.append(("ratio_skip_median", None, None))
    for rule, frac, k in tqdm(jobs, desc="pareto sweep", disable=not progress):
        if rule == "fixed_k":
            name = "fixed_k" if k == native else ("always_k-1" if k == native - 1 else f"fixed_k={k}")
            pol = FixedTopK(k)
            m = measure(model, pol, eval_ids, wcfg)
            rows.append(_row(name, k / native, float(k), pol, m))
            runs.append(m.ppl)
            continue
        if rule == "ratio_skip_median":
            pol = S.ratio_skip_median(stats)
            m = measure(model, pol, eval_ids, wcfg)
            rows.append(_row(rule, m.average_k / native, None, pol, m))
            runs.append(m.ppl)
            continue
        target = frac * native
        try:
            mr = match_avg_k(model, calib_ids, fitters[rule], target, lo=1.0, hi=float(native), cfg=match_cfg,
                             tol=cfg.tol)
        except BudgetNotMetError as exc:
            skipped.append({"rule": rule, "budget_fraction": frac, "reason": str(exc)})
            continue
        policy, m, passes = mr.policy, measure(model, mr.policy, eval_ids, wcfg), mr.forward_passes
        fit_target = mr.history[-1][0] if mr.history else target
        for _ in range(2 if refine_on_eval else 0):
            if abs(m.average_k - target) / target <= cfg.tol:
                break
            fit_target = min(max(fit_target + (target - m.average_k), 1.0), float(native))
            try:
                candidate = fitters[rule](fit_target)
            except BudgetNotMetError:
                break
            m2 = measure(model, candidate, eval_ids, wcfg)
            passes += 1
            if abs(m2.average_k - target) < abs(m.average_k - target):
                policy, m = candidate, m2
        rows.append(_row(rule, frac, target, policy, m, mr.achieved, passes, mr.within_tol))
        runs.append(m.ppl)
    out = {"fractions": list(cfg.fractions), "native_k": native, "k_values": list(kv), "rows": rows,
           "skipped": skipped, "pareto_front": pareto_front(rows)}
    if cfg.controls:
        from adaptk.evaluate.controls import add_controls

        add_controls(model, rows, eval_ids, wcfg, cfg.controls, cfg.control_seeds, rules=cfg.control_rules,
                     progress=progress)
    if baseline is not None:
        from adaptk.evaluate import evidence

        icfg = intervals or IntervalConfig()
        for r, run in zip(rows, runs):
            r.update(evidence.increase_fields(baseline, run, icfg))
        out["comparisons"] = evidence.compare_rules(rows, runs, baseline, icfg)
        out["interval"] = {"method": icfg.method, "level": icfg.level}
    return out


def pareto_front(rows: list[dict]) -> list[str]:
    """Rows (by 'rule@budget') not dominated in (eval avg k, ppl): lower is better in both."""
    front = []
    for r in rows:
        dominated = any(o is not r and o["eval_avg_k"] <= r["eval_avg_k"] and o["ppl"] <= r["ppl"]
                        and (o["eval_avg_k"] < r["eval_avg_k"] or o["ppl"] < r["ppl"]) for o in rows)
        if not dominated:
            front.append(f"{r['rule']}@{r['budget_fraction']:.2f}")
    return front


def format_table(sweep: dict) -> str:
    from adaptk.report.tables import increase

    cis = any("ppl_increase_lo" in r for r in sweep["rows"])
    level = (sweep.get("interval") or {}).get("level", 0.95)
    inc = f"  {'ppl increase [' + format(level, '.0%') + ' CI]':<24}" if cis else ""
    head = f"{'rule':<22} {'budget':>6} {'target k':>8} {'match k':>8} {'eval k':>7} {'ppl':>9} {'compute':>8}{inc}"
    lines = [head, "-" * len(head)]
    for r in sorted(sweep["rows"], key=lambda r: (-(r["budget_fraction"] or 0), r["rule"])):
        ck = f"{r['calib_avg_k']:.3f}" if r["calib_avg_k"] is not None else "-"
        tk = f"{r['target_avg_k']:.3f}" if r["target_avg_k"] is not None else "-"
        lines.append(f"{r['rule']:<22} {r['budget_fraction']:>6.2f} {tk:>8} {ck:>8} "
                     f"{r['eval_avg_k']:>7.3f} {r['ppl']:>9.3f} {r['compute_fraction']:>8.3f}"
                     + (f"  {increase(r)}" if cis else ""))
    return "\n".join(lines)

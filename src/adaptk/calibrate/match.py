"""Matched average k: fit a rule on recorded statistics, then verify (and correct) it with real
patched runs until the measured average k is within ``tol`` (relative) of the target."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from adaptk.calibrate.errors import BudgetNotMetError
from adaptk.measure import WindowConfig, measure
from adaptk.routing import Policy

log = logging.getLogger(__name__)


@dataclass
class MatchResult:
    policy: Policy
    target: float
    achieved: float  # measured by a patched run
    forward_passes: int
    within_tol: bool
    history: list[tuple[float, float]] = field(default_factory=list)  # (fit target, measured)


def match_avg_k(model: nn.Module, ids: torch.Tensor, fit: Callable[[float], Policy], target: float, *,
                lo: float, hi: float, cfg: WindowConfig, tol: float = 0.01, max_rounds: int = 4) -> MatchResult:
    """``fit(t)`` builds a policy for simulated average k ``t``; ``[lo, hi]`` is its reachable range."""
    fit_target, history = target, []
    best: MatchResult | None = None
    failure: BudgetNotMetError | None = None
    for _ in range(max_rounds):
        try:
            policy = fit(fit_target)
        except BudgetNotMetError as exc:
            failure = exc
            break
        got = measure(model, policy, ids, cfg).average_k
        history.append((fit_target, got))
        err = abs(got - target) / target
        if best is None or err < abs(best.achieved - target) / target:
            best = MatchResult(policy, target, got, len(history), err <= tol)
        if err <= tol:
            break
        fit_target = min(max(fit_target + (target - got), lo), hi)
    if best is None:
        raise failure or BudgetNotMetError(f"no policy reaches average k {target:g}")
    best.forward_passes, best.history = len(history), history
    if not best.within_tol:
        log.warning("matched average k %.3f vs target %.3f after %d patched runs", best.achieved, target, len(history))
    return best

"""A routing rule is one declaration: its policy class, how it is fitted, and the names it goes by
in ``adaptk calibrate --strategy``, in the side-by-side sweep (``adaptk evaluate --rules``) and in
``adaptk inspect`` (a flag). ``register_rule`` adds one to the registry; calibrate's strategies,
the sweep's rules and the CLI choices are all read off it.

Rules sit between calibrate's entry point (``adaptk.calibrate.api``, which reads the registry)
and calibrate's fitting code (statistics, fitters, matching, which the rules call).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adaptk.calibrate.collect import RouterStats
from adaptk.calibrate.errors import CalibrationError
from adaptk.calibrate.match import match_avg_k
from adaptk.measure import WindowConfig
from adaptk.routing import Policy


class RuleError(CalibrationError):
    """A rule name that is not registered, or a rule registered under a name already taken."""


@dataclass(frozen=True)
class FitInputs:
    """What a target fitter works on: recorded router statistics and the k values of entropy rules."""

    stats: RouterStats
    k_values: tuple[int, ...]
    per_layer: bool = False  # calibrate --per-layer
    weights: Sequence[float] | None = None  # per-layer quality sensitivity (the sweep's quality allocation)


FitFn = Callable[[FitInputs, float], Policy]  # (inputs, target average k) -> policy


@dataclass(frozen=True)
class CalibrationJob:
    """One ``calibrate()`` call as a rule's calibration sees it."""

    model: nn.Module
    ids: torch.Tensor  # [L] token ids for quality search and patched matching runs
    stats: RouterStats
    k_values: tuple[int, ...]
    native_k: int
    target: float | None  # target average k, if one was given
    cfg: Any  # the CalibrateConfig (calibrate's api sits above the rules)
    window: WindowConfig
    progress: bool = False
    calibration_ids: torch.Tensor | None = None  # [T] every calibration token the statistics recorded
    documents: torch.Tensor | None = None  # [T] the document of each (None: one document)


@dataclass(frozen=True)
class Fitted:
    """A calibrated policy, the forward passes it took beyond the statistics pass, and what was measured."""

    policy: Policy
    forward_passes: int = 0
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SweepEntry:
    """One rule of the side-by-side sweep: fitted to each budget's average k, then matched."""

    name: str
    fit: FitFn
    default: bool = True  # in the sweep when ``--rules`` is not given


@dataclass(frozen=True)
class Flag:
    """An ``adaptk inspect`` option that builds this rule's policy from its value."""

    option: str  # e.g. "--top-p"
    metavar: str
    help: str
    build: Callable[[Any, argparse.Namespace, int], Policy]  # (value, all arguments, num_experts) -> policy
    type: type = float
    nargs: str | None = None

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")


def full_range(k_values: tuple[int, ...], native_k: int) -> tuple[float, float]:
    """The average k a rule capped at the native k can reach: [1, native k]."""
    return 1, native_k


@dataclass(frozen=True)
class Rule:
    """A routing rule. It is a calibrate strategy when it has ``fit`` (calibrated to a target
    average k, corrected by patched runs) or its own ``calibration``."""

    name: str
    policy: type[Policy]
    fit: FitFn | None = None
    calibration: Callable[[Rule, CalibrationJob], Fitted] | None = None  # default: ``calibrate_to_target``
    needs_target: bool | Callable[[Any], bool] = False  # of the CalibrateConfig
    target_hint: str = ""  # appended to the "needs a target" message
    check: Callable[[Any], None] | None = None  # validates a CalibrateConfig that uses this strategy
    target_range: Callable[[tuple[int, ...], int], tuple[float, float]] = full_range
    sweep: tuple[SweepEntry, ...] = ()
    flag: Flag | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise RuleError(f"a rule name must be an identifier (it is a CLI choice), got {self.name!r}")
        if not (isinstance(self.policy, type) and issubclass(self.policy, Policy)):
            raise RuleError(f"rule {self.name!r}: policy must be a Policy subclass, got {self.policy!r}")
        if self.needs_target and self.fit is None:
            raise RuleError(f"rule {self.name!r} needs a target but has no fit to reach it: give fit=")

    @property
    def is_strategy(self) -> bool:
        return self.fit is not None or self.calibration is not None

    def requires_target(self, cfg: Any) -> bool:
        return self.needs_target(cfg) if callable(self.needs_target) else self.needs_target

    def calibrate(self, job: CalibrationJob) -> Fitted:
        if self.calibration is not None:
            return self.calibration(self, job)
        return calibrate_to_target(self, job)


def calibrate_to_target(rule: Rule, job: CalibrationJob) -> Fitted:
    """Fit ``rule`` for the job's target average k on the statistics; with ``cfg.verify``, correct
    it with patched runs until the measured average k is within ``cfg.tol``."""
    if rule.fit is None or job.target is None:
        raise RuleError(f"rule {rule.name!r} cannot be calibrated to a target average k: give one with "
                        "--target-avg-k or --target-fraction, or use a rule that has a fit")
    inputs = FitInputs(job.stats, job.k_values, per_layer=job.cfg.per_layer)
    fit = lambda t: rule.fit(inputs, t)
    if not job.cfg.verify:
        return Fitted(fit(job.target))
    lo, hi = rule.target_range(job.k_values, job.native_k)
    m = match_avg_k(job.model, job.ids, fit, job.target, lo=lo, hi=hi, cfg=job.window, tol=job.cfg.tol)
    return Fitted(m.policy, m.forward_passes,
                  {"measured_average_k": m.achieved, "within_tol": m.within_tol, "history": m.history})

"""``calibrate(model, ids, CalibrateConfig)``: one pass of router statistics, a search on them,
and a validated policy file that records how the policy was found."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from adaptk import rules
from adaptk.calibrate import strategies as S
from adaptk.calibrate.collect import RouterStats, collect_router_stats
from adaptk.calibrate.errors import CalibrationError
from adaptk.calibrate.fingerprint import data_fingerprint
from adaptk.calibrate.policy_file import PolicyFile, make_policy_file
from adaptk.calibrate.transfer import check_scope
from adaptk.measure import WindowConfig
from adaptk.routing import Policy

log = logging.getLogger(__name__)


def __getattr__(name: str):
    # STRATEGIES is read off the rule registry when asked for: the rules import calibrate's fitting
    # modules, so the registry may still be filling while this module is imported
    if name == "STRATEGIES":
        return rules.strategy_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class CalibrateConfig:
    strategy: str = "percentile"
    k_values: tuple[int, ...] | None = None  # entropy rules; default 1..native k
    alphas: tuple[float, ...] | None = None  # theory: θ_i = α_i log N
    target_avg_k: float | None = None
    target_fraction: float | None = None  # target average k as a fraction of native k
    target_distribution: tuple[float, ...] | None = None  # percentile: share per k value
    per_layer: bool = False
    max_ppl_increase: float | None = None  # quality: relative, 0.01 = 1%
    max_kl: float | None = None
    confidence: float | None = 0.95  # quality: accept on the upper confidence bound (None: point estimate)
    # quality: where the budget holds. "heldout": on unseen documents of the calibration text's kind
    # (a margin fitted by leave-documents-out, adaptk.calibrate.transfer); "calibration": on its tokens
    budget_scope: str = "heldout"
    heldout_folds: int = 4  # quality, heldout: folds of documents (each costs one more search)
    max_tokens: int = 16384  # router statistics
    quality_tokens: int = 4096  # tokens per forward pass of quality search / matching
    window: int = 512
    max_passes: int = 24
    verify: bool = True  # correct the fit with real patched runs to within 1% avg k
    tol: float = 0.01

    def __post_init__(self) -> None:
        rule = rules.get_strategy(self.strategy)  # RuleError (a CalibrationError) naming the strategies
        if self.target_avg_k is not None and self.target_fraction is not None:
            raise CalibrationError("give a target average k or a target fraction of native k, not both")
        if self.target_fraction is not None and not 0 < self.target_fraction <= 1:
            raise CalibrationError(f"target fraction must be in (0, 1], got {self.target_fraction}")
        if self.target_avg_k is not None and not self.target_avg_k > 0:
            raise CalibrationError(f"target average k must be > 0, got {self.target_avg_k}")
        check_scope(self.budget_scope)
        if not isinstance(self.heldout_folds, int) or self.heldout_folds < 2:
            raise CalibrationError(f"heldout_folds must be an integer >= 2 (folds of documents), got {self.heldout_folds!r}")
        for name in ("max_tokens", "quality_tokens", "window", "max_passes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise CalibrationError(f"{name} must be a positive integer, got {v!r}")
        if rule.requires_target(self) and self.target_avg_k is None and self.target_fraction is None:
            raise CalibrationError(f"strategy {self.strategy!r} needs a target: --target-avg-k or --target-fraction"
                                   + rule.target_hint)
        if self.alphas is not None and any(not a >= 0 for a in self.alphas):
            raise CalibrationError(f"alphas must be >= 0 (θ_i = α_i · log N is an entropy, never negative), "
                                   f"got {list(self.alphas)}")
        if rule.check is not None:
            rule.check(self)

    def target(self, native_k: int) -> float | None:
        if self.target_avg_k is not None:
            return float(self.target_avg_k)
        if self.target_fraction is not None:
            return self.target_fraction * native_k
        return None


@dataclass
class CalibrationOutcome:
    policy: Policy
    policy_file: PolicyFile
    stats: RouterStats
    details: dict = field(default_factory=dict)


def calibrate(model: nn.Module, ids: torch.Tensor, cfg: CalibrateConfig, *, progress: bool = False,
              stats: RouterStats | None = None, documents: torch.Tensor | None = None) -> CalibrationOutcome:
    """Fit ``cfg.strategy`` on ids [L] (token ids of the calibration text); ``documents`` [L]: the
    document each token came from (``adaptk.data.spread_sample_documents``), which the held-out
    budget scope folds by (None: one document)."""
    ids = ids.reshape(-1)
    if ids.numel() < 2:
        raise CalibrationError(f"calibration text has {ids.numel()} tokens; give more text")
    used = ids[: cfg.max_tokens]
    if stats is None:
        stats = collect_router_stats(model, used, window=cfg.window, max_tokens=cfg.max_tokens, progress=progress)
    native = min(stats.native_k)
    kv = tuple(cfg.k_values) if cfg.k_values else S.default_k_values(stats)
    target = cfg.target(native)
    qids = used[: cfg.quality_tokens]
    wcfg = WindowConfig(min(cfg.window, qids.numel()), min(cfg.window, qids.numel()))
    docs = documents.reshape(-1)[: cfg.max_tokens] if documents is not None else None
    job = rules.CalibrationJob(model, qids, stats, kv, native, target, cfg, wcfg, progress, used, docs)
    fitted = rules.get_strategy(cfg.strategy).calibrate(job)
    policy, passes, details = fitted.policy, 1 + fitted.forward_passes, fitted.details
    targets = {k: v for k, v in {"target_avg_k": target, "target_distribution": cfg.target_distribution,
                                 "max_ppl_increase": cfg.max_ppl_increase, "max_kl": cfg.max_kl,
                                 "confidence": cfg.confidence if cfg.strategy == "quality" else None,
                                 **_scope_targets(cfg),
                                 "alphas": cfg.alphas, "per_layer": cfg.per_layer,
                                 "k_values": list(kv)}.items() if v is not None}
    info = {"strategy": cfg.strategy, "data_sha256": data_fingerprint(used), "tokens": int(stats.tokens),
            "targets": targets, "forward_passes": passes,
            "measured": {k: v for k, v in details.items() if k != "trials"},
            "simulated_average_k": _safe_sim(policy, stats)}
    pf = make_policy_file(model, policy, info)
    return CalibrationOutcome(policy, pf, stats, details)


def _scope_targets(cfg: CalibrateConfig) -> dict:
    # recorded for the held-out scope only: a calibration-scope file is what it was before scopes
    if cfg.strategy != "quality" or cfg.budget_scope == "calibration":
        return {}
    return {"budget_scope": cfg.budget_scope, "heldout_folds": cfg.heldout_folds}


def _safe_sim(policy: Policy, stats: RouterStats) -> float:
    from adaptk.calibrate.simulate import simulated_avg_k

    try:
        return simulated_avg_k(policy, stats)
    except CalibrationError:
        return math.nan

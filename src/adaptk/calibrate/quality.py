"""Quality-constrained calibration: the lowest average k whose perplexity increase (or mean KL
to the full model's next-token distribution) on the calibration tokens stays within a budget.

Per-layer entropy thresholds are searched, not one global threshold:

1. one reference pass of the unpatched model;
2. sensitivity: each layer alone reduced to the middle of its k range (one pass per layer);
3. allocation: layer l gets a reduction r_l = min(1, c · s_min / s_l) of its k range (least
   sensitive layers are reduced first); per-layer percentile thresholds realise it;
4. bisection on c against the measured metric (``max_passes`` bounds the total).

With a ``confidence`` (default 0.95 from the CLI), a candidate is accepted only when the one-sided
upper confidence bound of its metric is within the budget, not just its point estimate: the
per-token differences are grouped in blocks of one window (tokens of a window are correlated) and
the bound is mean + z·(standard error of the block means). The lowest-k policy that only just
meets a budget on a sample is otherwise biased to miss it on other text of the same kind.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import torch
from torch import nn

from adaptk.calibrate.collect import RouterStats
from adaptk.calibrate.errors import BudgetNotMetError, CalibrationError
from adaptk.calibrate.strategies import entropy_for_avg_k
from adaptk.engines.transformers.patch import patch
from adaptk.measure import (
    PerplexityResult,
    WindowConfig,
    kl_to_reference,
    measure,
    sliding_window_perplexity,
)
from adaptk.routing import EntropyThreshold, FixedTopK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityBudget:
    max_ppl_increase: float | None = None  # relative, 0.01 = 1%
    max_kl: float | None = None  # nats/token
    confidence: float | None = None  # accept on the upper confidence bound (None: point estimate)

    def __post_init__(self) -> None:
        if self.confidence is not None and not (isinstance(self.confidence, int | float) and 0.5 <= self.confidence < 1):
            raise CalibrationError(f"confidence must be in [0.5, 1) (or none), got {self.confidence!r}")
        if (self.max_ppl_increase is None) == (self.max_kl is None):
            raise CalibrationError("give exactly one quality budget: max_ppl_increase or max_kl")
        v = self.max_ppl_increase if self.max_ppl_increase is not None else self.max_kl
        if not isinstance(v, int | float) or v < 0 or math.isnan(v):
            raise CalibrationError(f"a quality budget must be a number >= 0, got {v!r}")

    @property
    def metric(self) -> str:
        return "ppl_increase" if self.max_ppl_increase is not None else "kl"

    @property
    def limit(self) -> float:
        return float(self.max_ppl_increase if self.max_ppl_increase is not None else self.max_kl)


def upper_bound(per_token: torch.Tensor, block: int, confidence: float) -> tuple[float, float]:
    """(mean, one-sided upper confidence bound of the mean) of per-token values [L] (NaN = not
    scored), with the standard error of the means of consecutive blocks of ``block`` tokens."""
    d = per_token[torch.isfinite(per_token)].double()
    mean = float(d.mean()) if d.numel() else float("nan")
    nb = d.numel() // block
    if nb < 2:
        return mean, mean
    means = d[: nb * block].view(nb, block).mean(dim=1)  # [nb]
    se = float(means.std(unbiased=True)) / math.sqrt(nb)
    return mean, mean + NormalDist().inv_cdf(confidence) * se


def _per_token(ref, m, need_lp: bool) -> torch.Tensor:
    """Per-token metric: loss difference (ppl) or KL to the reference distribution. [L-1]"""
    if not need_lp:
        return m.ppl.token_loss - ref.token_loss
    r, q = ref.logprobs.float(), m.ppl.logprobs.float()
    return (r.exp() * (r - q)).sum(dim=-1)


@dataclass
class QualityResult:
    policy: EntropyThreshold
    metric: str
    value: float  # measured metric of the chosen policy
    average_k: float  # measured
    forward_passes: int
    met: bool
    trials: list[dict] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    upper: float = float("nan")  # upper confidence bound of the metric (= value without confidence)
    reference: PerplexityResult | None = None  # the unpatched pass on the search's tokens


def sensitivity_weights(metric: Callable[[list[float]], float], n_layers: int, kv: Sequence[int]) -> list[float]:
    """Reduce each layer alone to the middle of the k range; weight = least sensitivity / own."""
    kmin, kmax = kv[0], kv[-1]
    sens = []
    for lay in range(n_layers):
        targets = [float(kmax)] * n_layers
        targets[lay] = 0.5 * (kmin + kmax)
        sens.append(max(metric(targets), 1e-6))
    return [min(sens) / s for s in sens]


def layer_sensitivity_weights(model: nn.Module, ids: torch.Tensor, stats: RouterStats, k_values: Sequence[int],
                              cfg: WindowConfig) -> list[float]:
    """The quality search's per-layer weights on their own (1 + number of layers passes)."""
    kv = tuple(k_values)
    native = min(stats.native_k)
    with patch(model, FixedTopK(native)):
        ref = sliding_window_perplexity(model, ids, cfg)

    def metric(targets: list[float]) -> float:
        pol = entropy_for_avg_k(stats, kv, targets, per_layer=True)
        return measure(model, pol, ids, cfg).ppl.ppl / ref.ppl - 1.0

    return sensitivity_weights(metric, len(stats.layers), kv)


def targets_for_level(c: float, weights: Sequence[float], kv: Sequence[int]) -> list[float]:
    """Per-layer target average k at reduction level c: kmax - min(1, c·w_l)·(kmax - kmin)."""
    kmin, kmax = kv[0], kv[-1]
    return [kmax - min(1.0, c * w) * (kmax - kmin) for w in weights]


def quality_constrained(model: nn.Module, ids: torch.Tensor, stats: RouterStats, budget: QualityBudget, *,
                        k_values: Sequence[int], cfg: WindowConfig, max_passes: int = 24,
                        bisect_steps: int = 8, progress: bool = False, reference: PerplexityResult | None = None,
                        weights: Sequence[float] | None = None) -> QualityResult:
    """The lowest-k per-layer entropy policy whose metric on ids [L] meets ``budget``. A
    ``reference`` (an earlier search's unpatched pass on the same ids and window) and ``weights``
    (its layer sensitivities) are reused instead of measured again: a second search on the same
    tokens at another budget then costs only its bisection."""
    kv = tuple(k_values)
    n_layers = len(stats.layers)
    need_lp = budget.metric == "kl"
    native = min(stats.native_k)
    passes, trials = 0, []
    ref = reference
    if ref is None or (need_lp and ref.logprobs is None):
        with patch(model, FixedTopK(native)):  # reference = the model's own routing via the same kernels
            ref = sliding_window_perplexity(model, ids, cfg, keep_logprobs=need_lp, progress=progress,
                                            desc="reference")
        passes = 1

    def score(targets: list[float]) -> dict:
        nonlocal passes
        pol = entropy_for_avg_k(stats, kv, targets, per_layer=True)
        m = measure(model, pol, ids, cfg, keep_logprobs=need_lp)
        passes += 1
        value = (m.ppl.ppl / ref.ppl - 1.0) if not need_lp else kl_to_reference(ref.logprobs, m.ppl.logprobs)
        upper = value
        if budget.confidence is not None:
            _, ub = upper_bound(_per_token(ref, m, need_lp), cfg.window, budget.confidence)
            upper = math.expm1(ub) if not need_lp else ub  # ppl ratio - 1 = exp(mean loss difference) - 1
        t = {"policy": pol, "value": value, "upper": upper, "average_k": m.average_k, "targets": targets}
        trials.append({k: v for k, v in t.items() if k != "policy"})
        return t

    if weights is not None:
        weights = list(weights)
    else:
        weights = [1.0] * n_layers
        if n_layers > 1 and 1 + n_layers + 4 <= max_passes:
            weights = sensitivity_weights(lambda targets: score(targets)["value"], n_layers, kv)

    def targets_for(c: float) -> list[float]:
        return targets_for_level(c, weights, kv)

    lo, hi = 0.0, 1.0 / min(weights)
    best = None
    top = score(targets_for(hi))
    if top["upper"] <= budget.limit:
        best = top
    else:
        steps = 0
        while passes < max_passes and steps < bisect_steps:
            steps += 1
            c = 0.5 * (lo + hi)
            t = score(targets_for(c))
            if t["upper"] <= budget.limit:
                lo = c
                if best is None or t["average_k"] < best["average_k"]:
                    best = t
            else:
                hi = c
    if best is None and passes < max_passes:
        t = score(targets_for(0.0))
        if t["upper"] <= budget.limit:
            best = t
    if best is None:
        closest = min(trials, key=lambda t: t["upper"])
        bound = f" (upper {budget.confidence:.0%} bound {closest['upper']:.4g})" if budget.confidence else ""
        raise BudgetNotMetError(
            f"no per-layer entropy policy with k values {list(kv)} kept the {budget.metric} within "
            f"{budget.limit:g} in {passes} forward passes; the best found had {budget.metric} "
            f"{closest['value']:.4g}{bound} at average k {closest['average_k']:.3f}", best=closest)
    return QualityResult(best["policy"], budget.metric, best["value"], best["average_k"], passes, True,
                         trials, weights, upper=best["upper"], reference=ref)

"""How far a quality budget met on the calibration tokens transfers to unseen documents of the
same kind, and the margin that makes it hold there.

The quality search (``adaptk.calibrate.quality``) accepts the lowest-k policy whose upper
confidence bound on the calibration tokens is within the budget; that bound covers the sampling
noise of those tokens, not the difference between documents. Leave-documents-out measures the
latter. The documents of the calibration sample (stdlib files, novels, WikiText articles: each
token's document comes with the sample) are grouped into at most ``n_folds`` folds of similar
size; for each fold the whole search runs on the rest (router statistics of the other documents'
tokens, their share of the quality tokens, its own layer sensitivities; only the statistics pass
is reused, cut to those tokens), and the policy it picks is measured on every token of the
held-out documents, paired with the unpatched model on the same tokens. Per fold:

- ``exceedance = held-out metric - budget`` (how far the budget was missed on unseen text);
- ``gap = held-out metric - upper``, with ``upper`` the bound the search compared with the budget
  on the rest: what unseen text adds to the statistic the acceptance rests on.

The margin is the one-sided prediction bound of the gap of one more fold (Student t over the
folds' gaps at the search's ``confidence``: ``mean + t·sd·sqrt(1 + 1/n)``; the mean without a
confidence), at least 0: a bound for unseen text the size of one fold (a quarter of the
documents; of five novels, one or two), not only for the average over many such texts. A search whose
bound on the calibration tokens is within ``budget - margin`` then has a held-out estimate
``upper + mean gap`` and a held-out bound ``upper + prediction bound`` within the budget. This
assumes the gap does not depend on the budget (an additive shift); the folds search on a quarter
fewer tokens than the final search, so their bounds are a little wider and the margin a little
smaller.

Without documents (one text file, ``--sample first``) the folds are contiguous stretches of the
quality tokens, which share more with each other than separate documents do.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from adaptk.calibrate.collect import LayerRouting, RouterStats
from adaptk.calibrate.errors import BudgetNotMetError, CalibrationError
from adaptk.calibrate.quality import QualityBudget, QualityResult, quality_constrained
from adaptk.engines.transformers.patch import patch
from adaptk.measure import WindowConfig, kl_to_reference, measure, sliding_window_perplexity
from adaptk.routing import FixedTopK, Policy

log = logging.getLogger(__name__)

BUDGET_SCOPES = ("heldout", "calibration")


def check_scope(scope: str) -> str:
    if scope not in BUDGET_SCOPES:
        raise CalibrationError(f"unknown budget scope {scope!r}; use one of {', '.join(BUDGET_SCOPES)} "
                               "(heldout: the budget holds on unseen documents; calibration: on the calibration tokens)")
    return scope


def assign_folds(documents: torch.Tensor | None, tokens: int, quality_tokens: int,
                 n_folds: int) -> tuple[torch.Tensor, str]:
    """Fold of each of ``tokens`` calibration tokens [T] int64 (-1: never held out) and how the
    folds were made. Documents (ids [T], any integers) go whole into folds; first those with
    tokens among the first ``quality_tokens`` (the search's), largest share first, each to the fold
    with the fewest of them, then the others by their token counts; so every fold keeps most of
    the search's tokens. With fewer than two documents: ``n_folds`` contiguous stretches of the
    quality tokens."""
    q = min(quality_tokens, tokens)
    if documents is not None:
        documents = documents.reshape(-1)[:tokens].long()
        if documents.numel() != tokens:
            raise CalibrationError(f"{documents.numel()} document ids for {tokens} calibration tokens; "
                                   "give one per token")
    if documents is None or documents.unique().numel() < 2:
        fold = torch.full((tokens,), -1, dtype=torch.long)
        fold[:q] = torch.arange(q) * n_folds // max(q, 1)
        return fold, "contiguous stretches of the quality tokens (one document)"
    docs, inverse = documents.unique(return_inverse=True)  # docs sorted: a deterministic order
    in_q = torch.bincount(inverse[:q], minlength=docs.numel()).tolist()
    total = torch.bincount(inverse, minlength=docs.numel()).tolist()
    k = min(n_folds, docs.numel())
    load_q, load = [0] * k, [0] * k
    of_doc = [0] * docs.numel()
    first = sorted((d for d in range(docs.numel()) if in_q[d]), key=lambda d: (-in_q[d], d))
    others = sorted((d for d in range(docs.numel()) if not in_q[d]), key=lambda d: (-total[d], d))
    for d in first:
        f = min(range(k), key=lambda f: (load_q[f], load[f], f))
        of_doc[d] = f
        load_q[f] += in_q[d]
        load[f] += total[d]
    for d in others:
        f = min(range(k), key=lambda f: (load[f], f))
        of_doc[d] = f
        load[f] += total[d]
    return torch.tensor(of_doc, dtype=torch.long)[inverse], f"{docs.numel()} documents in {k} folds"


def select_stats(stats: RouterStats, keep: torch.Tensor) -> RouterStats:
    """The router statistics of the tokens where ``keep`` [T] bool is set, in order. Expert counts
    stay those of the whole pass (the fits do not read them)."""
    layers = [LayerRouting(lay.index, lay.num_experts, lay.native_k, lay.entropy[keep], lay.ranked[keep],
                           lay.expert_counts) for lay in stats.layers]
    return RouterStats(layers, tokens=int(keep.sum()), forward_passes=0, meta=dict(stats.meta))


def fit_margin(gaps: list[float], confidence: float | None) -> float:
    """At least 0: the one-sided ``confidence`` prediction bound (Student t, n - 1 degrees of
    freedom) of one more fold's gap, from the folds' gaps; their mean without a confidence or with
    one fold."""
    if not gaps:
        raise CalibrationError("no fold gave a policy to measure the transfer with; give more calibration text")
    return max(0.0, prediction_bound(gaps, confidence))


def prediction_bound(gaps: list[float], confidence: float | None) -> float:
    """``mean + t·sd·sqrt(1 + 1/n)`` of n values (the mean alone without a confidence or with one)."""
    n = len(gaps)
    mean = sum(gaps) / n
    if confidence is None or n < 2:
        return mean
    from scipy.stats import t as student_t  # scipy is imported only when a margin is fitted

    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / (n - 1))
    return mean + float(student_t.ppf(confidence, n - 1)) * sd * math.sqrt(1 + 1 / n)


@dataclass(frozen=True)
class Fold:
    index: int
    documents: int  # held out
    heldout_tokens: int
    search_tokens: int  # the rest's quality tokens the fold's search measured on
    value: float = math.nan  # the fold policy's metric there
    upper: float = math.nan  # its upper bound there (what the search compared with the budget)
    average_k: float = math.nan
    heldout: float = math.nan  # its metric on the held-out documents
    heldout_average_k: float = math.nan
    forward_passes: int = 0
    note: str | None = None  # why the fold gave no policy

    @property
    def ok(self) -> bool:
        return self.note is None

    @property
    def gap(self) -> float:
        return self.heldout - self.upper


@dataclass
class Transfer:
    """The cross-validation of one budget: its folds and what they say."""

    metric: str
    limit: float
    confidence: float | None
    folds_by: str
    folds: list[Fold] = field(default_factory=list)

    @property
    def gaps(self) -> list[float]:
        return [f.gap for f in self.folds if f.ok]

    @property
    def exceedances(self) -> list[float]:
        return [f.heldout - self.limit for f in self.folds if f.ok]

    @property
    def forward_passes(self) -> int:
        return sum(f.forward_passes for f in self.folds)

    def margin(self) -> float:
        return fit_margin(self.gaps, self.confidence)

    def estimate(self, upper: float) -> tuple[float, float]:
        """(held-out estimate, its bound) of a policy whose bound on the calibration tokens is ``upper``."""
        gaps = self.gaps
        return upper + sum(gaps) / len(gaps), upper + prediction_bound(gaps, self.confidence)

    def to_dict(self) -> dict:
        ex = self.exceedances
        return {"metric": self.metric, "budget": self.limit, "confidence": self.confidence, "folds_by": self.folds_by,
                "folds": [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(f).items()}
                          for f in self.folds],  # a fold that gave no policy: None, not NaN, in the JSON
                "exceedance": {"mean": sum(ex) / len(ex), "max": max(ex), "over_budget": sum(e > 0 for e in ex),
                               "folds": len(ex)} if ex else None}


def heldout_metric(model: nn.Module, policy: Policy, ids: torch.Tensor, cfg: WindowConfig, metric: str,
                   native: int) -> tuple[float, float]:
    """(metric, average k) of ``policy`` on ids [L] against the unpatched model on the same tokens:
    relative perplexity increase or mean KL. Two passes."""
    need_lp = metric == "kl"
    with patch(model, FixedTopK(native)):
        ref = sliding_window_perplexity(model, ids, cfg, keep_logprobs=need_lp)
    m = measure(model, policy, ids, cfg, keep_logprobs=need_lp)
    value = kl_to_reference(ref.logprobs, m.ppl.logprobs) if need_lp else m.ppl.ppl / ref.ppl - 1.0
    return value, m.average_k


def _window(window: int, n: int) -> WindowConfig:
    w = min(window, n)
    return WindowConfig(w, w)


def leave_documents_out(model: nn.Module, ids: torch.Tensor, stats: RouterStats, budget: QualityBudget, *,
                        documents: torch.Tensor | None, k_values: tuple[int, ...], window: int,
                        quality_tokens: int, n_folds: int = 4, max_passes: int = 24,
                        progress: bool = False) -> Transfer:
    """The cross-validation of ``budget`` on the calibration tokens ids [T] (the tokens ``stats``
    recorded, in order) with their document ids [T] (None: one document)."""
    ids = ids.reshape(-1)
    if stats.tokens != ids.numel():
        raise CalibrationError(f"the router statistics hold {stats.tokens} tokens, the calibration text "
                               f"{ids.numel()}; record them on the same tokens")
    q = min(quality_tokens, ids.numel())
    fold_of, how = assign_folds(documents, ids.numel(), q, n_folds)
    native = min(stats.native_k)
    out = Transfer(budget.metric, budget.limit, budget.confidence, how)
    from tqdm.auto import tqdm

    for f in tqdm(sorted(set(fold_of.tolist()) - {-1}), desc="held-out folds", disable=not progress, leave=False):
        hold = fold_of == f
        rest_q = ids[:q][~hold[:q]]
        held = ids[hold]
        n_docs = int(documents.reshape(-1)[: ids.numel()][hold].unique().numel()) if documents is not None else 1
        base = dict(index=f, documents=n_docs, heldout_tokens=int(held.numel()), search_tokens=int(rest_q.numel()))
        if rest_q.numel() < 2 or held.numel() < 2:
            out.folds.append(Fold(**base, note="too few tokens left to search on or to hold out"))
            continue
        try:
            res = quality_constrained(model, rest_q, select_stats(stats, ~hold), budget, k_values=k_values,
                                      cfg=_window(window, rest_q.numel()), max_passes=max_passes)
        except BudgetNotMetError as exc:
            out.folds.append(Fold(**base, note=f"no policy met the budget on the rest: {exc}"))
            continue
        value, avg_k = heldout_metric(model, res.policy, held, _window(window, held.numel()), budget.metric, native)
        out.folds.append(Fold(**base, value=res.value, upper=res.upper, average_k=res.average_k, heldout=value,
                              heldout_average_k=avg_k, forward_passes=res.forward_passes + 2))
        log.info("fold %d: %s %.4g (bound %.4g) on the rest, %.4g on %d held-out tokens", f, budget.metric,
                 res.value, res.upper, value, held.numel())
    return out


@dataclass
class HeldoutResult:
    """The search at the tightened budget, the search at the stated one, and the cross-validation."""

    final: QualityResult
    stated: QualityResult
    transfer: Transfer
    margin: float
    searched_limit: float

    @property
    def forward_passes(self) -> int:
        extra = self.final.forward_passes if self.final is not self.stated else 0
        return self.stated.forward_passes + self.transfer.forward_passes + extra

    def details(self) -> dict:
        est, bound = self.transfer.estimate(self.final.upper)
        return {"budget_scope": "heldout", "margin": self.margin, "searched_budget": self.searched_limit,
                "heldout_estimate": est, "heldout_upper_bound": bound,
                "calibration_scope": {"value": self.stated.value, "upper_bound": self.stated.upper,
                                      "measured_average_k": self.stated.average_k},
                "transfer": self.transfer.to_dict()}


def heldout_constrained(model: nn.Module, ids: torch.Tensor, stats: RouterStats, budget: QualityBudget, *,
                        documents: torch.Tensor | None, k_values: tuple[int, ...], window: int,
                        quality_tokens: int, n_folds: int = 4, max_passes: int = 24,
                        progress: bool = False) -> HeldoutResult:
    """The quality search whose budget holds on unseen documents: the search at the stated budget
    (its reference pass and layer weights are reused), the cross-validation of that budget, then,
    if the margin is above 0, the search again at ``budget - margin`` on the same tokens."""
    ids = ids.reshape(-1)
    q = ids[:quality_tokens]
    cfg = _window(window, q.numel())
    stated = quality_constrained(model, q, stats, budget, k_values=k_values, cfg=cfg, max_passes=max_passes,
                                 progress=progress)
    transfer = leave_documents_out(model, ids, stats, budget, documents=documents, k_values=k_values, window=window,
                                   quality_tokens=quality_tokens, n_folds=n_folds, max_passes=max_passes,
                                   progress=progress)
    if not transfer.gaps:
        notes = "; ".join(f"fold {f.index}: {f.note}" for f in transfer.folds) or "no fold"
        raise BudgetNotMetError(f"the budget met on the calibration tokens could not be checked on held-out "
                                f"documents ({transfer.folds_by}): {notes}; give more calibration text or use "
                                "--budget-scope calibration", best={"value": stated.value, "upper": stated.upper,
                                                                      "average_k": stated.average_k})
    margin = transfer.margin()
    limit = max(0.0, budget.limit - margin)
    final = stated
    if margin > 0:
        tight = QualityBudget(**{("max_ppl_increase" if budget.metric == "ppl_increase" else "max_kl"): limit,
                                 "confidence": budget.confidence})
        try:
            final = quality_constrained(model, q, stats, tight, k_values=k_values, cfg=cfg, max_passes=max_passes,
                                        reference=stated.reference, weights=stated.weights)
        except BudgetNotMetError as exc:
            raise BudgetNotMetError(f"the held-out margin {margin:.4g} (from {len(transfer.gaps)} folds: "
                                    f"{transfer.folds_by}) leaves a budget of {limit:.4g} on the calibration "
                                    f"tokens, which no policy met: {exc}; raise the budget or use "
                                    "--budget-scope calibration", best=exc.best) from exc
    log.info("held-out margin %.4g: searched at %s %.4g", margin, budget.metric, limit)
    return HeldoutResult(final, stated, transfer, margin, limit)


def quality_summary(measured: dict) -> str:
    """One line: the quality a policy file's quality search accepted, on the calibration tokens
    and, with the held-out scope, the held-out estimate and the margin the search was tightened by."""
    m = measured
    level = f"{m['confidence']:.0%} " if m.get("confidence") else ""
    line = f"quality: {m['metric']} = {m['value']:.4f}"
    if m.get("confidence"):
        line += f" (upper {level}bound {m['upper_bound']:.4f})"
    line += " on the calibration tokens"
    if m.get("budget_scope") == "heldout":
        t = m["transfer"]
        used = sum(f["note"] is None for f in t["folds"])
        folds = t["folds_by"] + (f", {used} of {len(t['folds'])} gave a policy" if used < len(t["folds"]) else "")
        line += (f"; held-out estimate {m['heldout_estimate']:.4f} (upper {level}prediction bound "
                 f"{m['heldout_upper_bound']:.4f}; {folds}); searched at {m['searched_budget']:.4f} = budget "
                 f"{t['budget']:.4f} - margin {m['margin']:.4f}")
    return line

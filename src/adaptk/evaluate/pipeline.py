"""The whole Adaptive-K pipeline on one model: calibrate on one text, evaluate on another, and
gather every table into one JSON-ready dict (``adaptk.report`` renders it)."""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations

import torch
from torch import nn

from adaptk.calibrate import (
    BudgetNotMetError,
    CalibrateConfig,
    CalibrationError,
    PolicyFile,
    RouterRecorder,
    calibrate,
    collect_router_stats,
    data_fingerprint,
    default_k_values,
    entropy_for_avg_k,
    layer_k,
    layer_sensitivity_weights,
    match_avg_k,
    model_fingerprint,
    theory,
)
from adaptk.engines.transformers.patch import patch
from adaptk.evaluate import analysis as A
from adaptk.evaluate.downstream import DownstreamTask, downstream_section, sweep_policies
from adaptk.evaluate.evidence import increase_fields
from adaptk.evaluate.sweep import SweepConfig, pareto_sweep
from adaptk.measure import (
    IntervalConfig,
    TextTooShortError,
    WindowConfig,
    measure,
    sliding_window_perplexity,
)
from adaptk.routing import FixedTopK, Policy

log = logging.getLogger(__name__)

DEFAULT_SECTIONS = ("sensitivity", "granularity", "tokens", "pareto")
# "downstream" (multiple-choice accuracy at matched k) scores every run again on its items: asked for by name
SECTIONS = (*DEFAULT_SECTIONS, "downstream")


@dataclass(frozen=True)
class EvaluateConfig:
    calib_tokens: int = 16384
    eval_tokens: int = 16384
    match_tokens: int = 4096
    window: int = 256
    stride: int = 128
    calibration: CalibrateConfig = field(default_factory=lambda: CalibrateConfig(
        "quality", max_ppl_increase=0.01))
    alphas: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    granularity_fraction: float = 0.75
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # where the Pareto rules are matched in average k: the "eval" text (a compute budget only, no
    # quality is fitted on it; rules then compare within 1% of the same k) or the "calib" tokens
    match_on: str = "eval"
    # the paired interval of every perplexity increase (blocks = the evaluation windows)
    intervals: IntervalConfig = field(default_factory=IntervalConfig)

    def __post_init__(self) -> None:
        for name in ("calib_tokens", "eval_tokens", "match_tokens", "window", "stride"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise CalibrationError(f"{name} must be a positive integer, got {v!r}")
        WindowConfig(self.window, self.stride)
        if self.match_on not in ("calib", "eval"):
            raise CalibrationError(f"match_on must be 'calib' or 'eval', got {self.match_on!r}")
        bad = [s for s in self.sections if s not in SECTIONS]
        if bad:
            raise CalibrationError(f"unknown sections {bad}; choose from {list(SECTIONS)}")


def _run_summary(m, native: int) -> dict:
    return {"ppl": m.ppl.ppl, "nll": m.ppl.nll, "tokens_scored": m.ppl.tokens, "seconds": m.ppl.seconds,
            "tokens_per_second": m.ppl.tokens_per_second, "average_k": m.average_k,
            "compute_fraction": m.report.compute_fraction, "executed_pairs": m.report.executed_pairs,
            "native_pairs": m.report.native_pairs,
            "layer_average_k": [r.average_k for r in m.report.layers],
            "k_histogram": [sum(c) for c in zip(*[r.k_histogram for r in m.report.layers])]}


def granularity_sets(native: int, num_experts: int) -> list[tuple[int, ...]]:
    """k-value sets within 1..native k that contain native k (at most 4), plus one that goes
    one past native k when the layer has room (§6.2)."""
    lower = list(range(1, native))
    sets = []
    for r in range(len(lower), 0, -1):
        for c in combinations(lower, r):
            if 1 in c:
                sets.append((*c, native))
    sets = sorted(set(sets), key=lambda s: (len(s), s))[:4]
    if native + 1 <= num_experts:
        sets.append(tuple(range(1, native + 2)))
    return sets


@torch.no_grad()
def run_evaluation(model: nn.Module, calib_ids: torch.Tensor, eval_ids: torch.Tensor, cfg: EvaluateConfig,
                   *, meta: dict | None = None, progress: bool = True, policy: Policy | None = None,
                   policy_file: PolicyFile | None = None, calib_documents: torch.Tensor | None = None,
                   downstream: DownstreamTask | None = None) -> dict:
    """Calibrate on calib_ids [Lc] (``calib_documents`` [Lc]: the document of each token, which the
    held-out budget scope folds by), evaluate on eval_ids [Le]; returns the results dict. A
    ``policy`` (or a loaded ``policy_file``, whose calibration record is kept) is evaluated instead.
    The ``downstream`` section scores the items of ``downstream`` (``adaptk.evaluate.downstream.build_task``)."""
    if "downstream" in cfg.sections and downstream is None:
        raise CalibrationError("the downstream section needs its items: build them with "
                               "adaptk.evaluate.downstream.build_task and pass downstream=...")
    t0 = time.perf_counter()
    calib_ids, eval_ids = calib_ids.reshape(-1)[: cfg.calib_tokens], eval_ids.reshape(-1)[: cfg.eval_tokens]
    fp = model_fingerprint(model)
    if eval_ids.numel() < cfg.window:
        raise TextTooShortError(f"evaluation text has {eval_ids.numel()} tokens, shorter than one window of "
                                f"{cfg.window}; give more text or a smaller --window")
    if calib_ids.numel() < cfg.window:
        raise TextTooShortError(f"calibration text has {calib_ids.numel()} tokens, shorter than one window of "
                                f"{cfg.window}; give more text or a smaller --window")
    native, n_exp = min(fp["native_k"]), min(fp["num_experts"])
    wcfg = WindowConfig(cfg.window, cfg.stride)
    mcfg = WindowConfig(cfg.window, cfg.window)
    match_ids = calib_ids[: cfg.match_tokens]
    out: dict = {"meta": {**(meta or {}), "model": fp, "calib_tokens": int(calib_ids.numel()),
                          "eval_tokens": int(eval_ids.numel()), "calib_sha256": data_fingerprint(calib_ids),
                          "eval_sha256": data_fingerprint(eval_ids), "window": cfg.window, "stride": cfg.stride,
                          "match_tokens": int(match_ids.numel()), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "machine": platform.machine(),
                          "interval": asdict(cfg.intervals)}}

    # 1. router statistics on the calibration text (one pass) and on the evaluation text
    stats = collect_router_stats(model, calib_ids, window=cfg.window, max_tokens=cfg.calib_tokens, progress=progress)
    eval_stats = collect_router_stats(model, eval_ids, window=cfg.window, max_tokens=cfg.eval_tokens, progress=progress)
    out["entropy_distribution"] = {"calibration": A.entropy_distribution(stats),
                                   "evaluation": A.entropy_distribution(eval_stats)}
    out["entropy_histograms"] = A.entropy_histograms(eval_stats)

    # 2. baseline: the native routing through the same back-end
    base = measure(model, FixedTopK(native), eval_ids, wcfg, progress=progress, desc="baseline")
    out["baseline"] = _run_summary(base, native)

    # 3. calibrate the main policy and evaluate it
    ccfg = CalibrateConfig(**{**asdict(cfg.calibration), "max_tokens": cfg.calib_tokens,
                              "quality_tokens": cfg.match_tokens, "window": cfg.window})
    weights = None
    if policy_file is not None:
        policy, calib_info, calib_note = policy_file.build_policy(), policy_file.model_dump(), "policy given"
    elif policy is not None:
        calib_info, calib_note = {"policy": policy.to_dict(), "calibration": None}, "policy given"
    else:
        try:
            docs = calib_documents.reshape(-1)[: cfg.calib_tokens] if calib_documents is not None else None
            outcome = calibrate(model, calib_ids, ccfg, progress=progress, stats=stats, documents=docs)
            policy = outcome.policy
            calib_info = outcome.policy_file.model_dump()
            weights = getattr(outcome, "details", {}).get("weights")
            calib_note = None
        except BudgetNotMetError as exc:
            log.warning("calibration: %s; evaluating native top-k instead", exc)
            policy, calib_info, calib_note = FixedTopK(native), None, str(exc)
    main = measure(model, policy, eval_ids, wcfg, progress=progress, desc="calibrated policy")
    out["calibrated"] = {"policy_file": calib_info, "note": calib_note, **_run_summary(main, native),
                         **increase_fields(base.ppl, main.ppl, cfg.intervals)}
    out["layerwise"] = A.layerwise(eval_stats, main.report)
    out["expert_usage"] = [{"layer": r.layer, "native": lay.expert_counts.tolist(), "policy": r.expert_counts}
                           for r, lay in zip(main.report.layers, eval_stats.layers)]

    # 4. §6.1 threshold sensitivity: θ = α log N, k in {1, native}
    if "sensitivity" in cfg.sections and native > 1:
        rows = []
        from tqdm.auto import tqdm

        for a in tqdm(cfg.alphas, desc="threshold sensitivity", disable=not progress):
            pol = theory(stats, (1, native), (a,))
            m = measure(model, pol, eval_ids, wcfg)
            rows.append({"alpha": a, "threshold": pol.thresholds[0] if not pol._is_per_layer() else None,
                         "ppl": m.ppl.ppl, "average_k": m.average_k, "compute_fraction": m.report.compute_fraction,
                         **increase_fields(base.ppl, m.ppl, cfg.intervals)})
        out["threshold_sensitivity"] = rows

    # 5. §6.2 k-value granularity at a matched average k
    if "granularity" in cfg.sections and native > 1:
        rows = []
        target = cfg.granularity_fraction * native
        for kv in granularity_sets(native, n_exp):
            try:
                mr = match_avg_k(model, match_ids, lambda t, kv=kv: entropy_for_avg_k(stats, kv, t), target,
                                 lo=kv[0], hi=kv[-1], cfg=mcfg)
            except BudgetNotMetError as exc:
                rows.append({"k_values": list(kv), "error": str(exc)})
                continue
            m = measure(model, mr.policy, eval_ids, wcfg)
            rows.append({"k_values": list(kv), "beyond_native": kv[-1] > native, "target_avg_k": target,
                         "calib_avg_k": mr.achieved, "average_k": m.average_k, "ppl": m.ppl.ppl,
                         "compute_fraction": m.report.compute_fraction,
                         "k_histogram": _run_summary(m, native)["k_histogram"],
                         **increase_fields(base.ppl, m.ppl, cfg.intervals)})
        out["granularity"] = rows

    # 6. §6.4 token characteristics under the calibrated policy (non-overlapping windows)
    if "tokens" in cfg.sections:
        out["token_characteristics"] = _token_characteristics(model, policy, eval_ids, mcfg)

    # 7. side by side at matched average k
    if "pareto" in cfg.sections and native > 1:
        if weights is None and len(stats.layers) > 1:
            weights = layer_sensitivity_weights(model, match_ids, stats, default_k_values(stats), mcfg)
        sweep_ids = match_ids if cfg.match_on == "calib" else eval_ids[: cfg.match_tokens]
        out["pareto"] = pareto_sweep(model, sweep_ids, eval_ids, stats, cfg.sweep, wcfg, mcfg,
                                     weights=weights, refine_on_eval=cfg.match_on == "eval", progress=progress,
                                     baseline=base.ppl, intervals=cfg.intervals)
        out["pareto"]["baseline_ppl"] = base.ppl.ppl
        out["pareto"]["layer_weights"] = weights
        out["pareto"]["matched_on"] = cfg.match_on

    # 8. downstream accuracy of native, calibrated and every sweep policy on the same items
    if "downstream" in cfg.sections:
        runs = [("native top-k", 1.0, FixedTopK(native), out["baseline"]), ("calibrated", None, policy, out["calibrated"])]
        runs += [(r["rule"], r["budget_fraction"], p, r) for r, p in sweep_policies(out.get("pareto"))]
        out["downstream"] = downstream_section(model, downstream, runs, cfg.intervals, progress=progress)
    out["meta"]["seconds"] = time.perf_counter() - t0
    return _clean(out)


def _token_characteristics(model, policy, ids, mcfg) -> dict:
    with patch(model, policy), RouterRecorder(model, max_tokens=ids.numel()) as rec:
        res = sliding_window_perplexity(model, ids, mcfg)
    st = rec.result()
    ks = torch.stack([layer_k(policy, lay).double() for lay in st.layers])  # [layers, L]
    vocab = int(max(int(ids.max()) + 1, getattr(model.config, "vocab_size", 0)))
    out = A.token_characteristics(ids, ks.mean(0), res.token_loss, A.frequency_ranks(ids, vocab))
    return out


def _clean(x):
    """JSON-safe: NaN/inf -> None, tuples -> lists, tensors -> lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _clean(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x

"""Routing baselines and drift: is this traffic routed like the corpus the baseline came from?

A baseline is the routing profile of a corpus: per MoE layer, the histogram of routing entropy
(fixed bins over [0, log N]) and the expert usage counts, plus the model fingerprint
(architecture, number of MoE layers, N and native k per layer), saved as versioned JSON.

New traffic is scored per layer with the population stability index (PSI) and the
Jensen-Shannon divergence (bits) of both histograms. Thresholds (``DriftConfig``):

- PSI > 0.25 is the customary "major shift" cut (credit-scoring practice: < 0.1 stable,
  0.1-0.25 moderate, > 0.25 major);
- JS > 0.05 bits is about the same size of change (for small changes PSI ≈ χ² and
  JS ≈ χ²/8 nats, so PSI 0.25 ≈ 0.045 bits).

A layer is ``shifted`` when any of the four numbers passes its threshold and both sides have at
least ``min_tokens`` tokens (with fewer, sampling noise alone moves PSI; the layer is reported
as not judged).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from adaptk.monitor import functional as F
from adaptk.monitor.errors import BaselineError
from adaptk.monitor.report import MonitorReport

log = logging.getLogger(__name__)

BASELINE_FORMAT = "adaptk-routing-baseline"
BASELINE_VERSION = 1
_FP_KEYS = ("architecture", "num_moe_layers", "num_experts", "native_k")


@dataclass(frozen=True)
class DriftConfig:
    psi_threshold: float = 0.25
    js_threshold: float = 0.05  # bits
    min_tokens: int = 200
    eps: float = 1e-4  # PSI smoothing of empty bins

    def __post_init__(self) -> None:
        if not self.psi_threshold > 0:
            raise ValueError(f"psi_threshold must be > 0, got {self.psi_threshold}")
        if not 0 < self.js_threshold <= 1:
            raise ValueError(f"js_threshold must lie in (0, 1] bits, got {self.js_threshold}")
        if not (isinstance(self.min_tokens, int) and self.min_tokens >= 1):
            raise ValueError(f"min_tokens must be an integer >= 1, got {self.min_tokens!r}")
        if not 0 < self.eps < 0.01:
            raise ValueError(f"eps must lie in (0, 0.01), got {self.eps}")


@dataclass(frozen=True)
class LayerProfile:
    layer: int
    tokens: int
    entropy_histogram: list[int]
    expert_counts: list[int]


@dataclass(frozen=True)
class Baseline:
    fingerprint: dict[str, Any]
    bins: int
    layers: list[LayerProfile]
    source: str = ""

    @classmethod
    def from_report(cls, report: MonitorReport, source: str = "") -> Baseline:
        if not report.layers:
            raise BaselineError("cannot build a baseline from a report with no layers")
        profiles = [LayerProfile(s.layer, s.tokens, list(s.entropy_histogram), list(s.expert_counts))
                    for s in report.layers]
        return cls(dict(report.fingerprint), len(report.layers[0].entropy_histogram), profiles, source)

    def to_dict(self) -> dict:
        return {"format": BASELINE_FORMAT, "version": BASELINE_VERSION, "fingerprint": self.fingerprint,
                "bins": self.bins, "source": self.source, "layers": [asdict(p) for p in self.layers]}

    @staticmethod
    def check_save(path: str | Path, overwrite: bool = False, flag: str = "--save-baseline") -> Path:
        """Validate where :meth:`save` will write, without writing (call it before routing any text):
        an existing file is replaced only if it is an adaptk routing baseline, or with ``overwrite``."""
        from adaptk.outputs import check_file, json_is_own

        return check_file(path, "baseline", json_is_own(lambda d: d.get("format") == BASELINE_FORMAT),
                          overwrite=overwrite, flag=flag)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write atomically (temp file + rename); never over a file that is not an adaptk baseline
        unless ``overwrite`` (see :mod:`adaptk.outputs`)."""
        from adaptk.outputs import json_is_own, write_file

        path = write_file(path, json.dumps(self.to_dict(), indent=1) + "\n", "baseline",
                          json_is_own(lambda d: d.get("format") == BASELINE_FORMAT), overwrite=overwrite,
                          flag="--save-baseline")
        log.info("saved routing baseline of %d layers to %s", len(self.layers), path)
        return path

    @classmethod
    def from_dict(cls, data: Any, where: str = "baseline") -> Baseline:
        if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
            raise BaselineError(f"{where} is not an adaptk routing baseline (no format={BASELINE_FORMAT!r})")
        version = data.get("version")
        if not isinstance(version, int):
            raise BaselineError(f"{where} has no integer 'version' field")
        if version > BASELINE_VERSION:
            raise BaselineError(
                f"{where} is baseline format version {version}, newer than this adaptk reads "
                f"({BASELINE_VERSION}); upgrade adaptk or re-save the baseline"
            )
        try:
            fp, bins = data["fingerprint"], int(data["bins"])
            if not isinstance(fp, dict) or any(k not in fp for k in _FP_KEYS):
                raise KeyError(f"fingerprint with {', '.join(_FP_KEYS)}")
            layers = [LayerProfile(int(p["layer"]), int(p["tokens"]), [int(c) for c in p["entropy_histogram"]],
                                   [int(c) for c in p["expert_counts"]]) for p in data["layers"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"{where} is malformed: missing or bad field {exc}") from exc
        if len(layers) != fp["num_moe_layers"] or len(fp["num_experts"]) != len(layers):
            raise BaselineError(f"{where} is malformed: {len(layers)} layer profiles for "
                                f"{fp['num_moe_layers']} MoE layers")
        for p, n in zip(layers, fp["num_experts"], strict=True):
            if len(p.entropy_histogram) != bins or len(p.expert_counts) != n:
                raise BaselineError(f"{where} is malformed: layer {p.layer} histograms do not match "
                                    f"{bins} bins and {n} experts")
            if min(p.entropy_histogram + p.expert_counts, default=0) < 0:
                raise BaselineError(f"{where} is malformed: negative counts in layer {p.layer}")
        return cls(fp, bins, layers, str(data.get("source", "")))

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        path = Path(path)
        if path.is_dir():
            raise BaselineError(f"baseline file {path} is a folder; pass a baseline file (the JSON written by "
                                "`adaptk monitor --save-baseline FILE`)")
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise BaselineError(f"baseline file {path} does not exist") from exc
        except OSError as exc:
            raise BaselineError(f"cannot read baseline file {path}: {exc.strerror or exc}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BaselineError(f"baseline file {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, where=f"baseline file {path}")

    def check_matches(self, fingerprint: dict[str, Any]) -> None:
        """Raise ``BaselineError`` naming the difference when ``fingerprint`` is another model's."""
        diffs = [f"{k}: baseline {self.fingerprint.get(k)!r}, model {fingerprint.get(k)!r}"
                 for k in _FP_KEYS if self.fingerprint.get(k) != fingerprint.get(k)]
        if diffs:
            raise BaselineError("the baseline was recorded on another model (" + "; ".join(diffs) + "): "
                                "its histograms cannot be compared with this model's; record a baseline on "
                                "this model with `adaptk monitor --save-baseline FILE`")


@dataclass(frozen=True)
class LayerDrift:
    layer: int
    baseline_tokens: int
    tokens: int
    psi_entropy: float
    js_entropy: float  # bits
    psi_usage: float
    js_usage: float  # bits
    judged: bool  # both sides have at least min_tokens
    shifted: bool
    reasons: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    layers: list[LayerDrift]
    config: DriftConfig

    @property
    def shifted_layers(self) -> list[int]:
        return [d.layer for d in self.layers if d.shifted]

    @property
    def shifted(self) -> bool:
        return bool(self.shifted_layers)

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "shifted_layers": self.shifted_layers,
                "layers": [d.to_dict() for d in self.layers]}

    def table(self) -> str:
        rows = [f"{'layer':>5} {'tokens':>8} {'PSI(H)':>7} {'JS(H)':>6} {'PSI(use)':>8} {'JS(use)':>7}  shifted"]
        for d in self.layers:
            flag = ("yes: " + ", ".join(d.reasons)) if d.shifted else ("no" if d.judged else "not judged (few tokens)")
            rows.append(f"{d.layer:>5} {d.tokens:>8} {d.psi_entropy:>7.3f} {d.js_entropy:>6.3f} "
                        f"{d.psi_usage:>8.3f} {d.js_usage:>7.3f}  {flag}")
        c = self.config
        rows.append(f"thresholds: PSI > {c.psi_threshold}, JS > {c.js_threshold} bits; "
                    f"shifted layers: {self.shifted_layers or 'none'}")
        return "\n".join(rows)


def layer_drift(base: LayerProfile, entropy_hist: list[int], expert_counts: list[int], tokens: int,
                config: DriftConfig) -> LayerDrift:
    """Drift numbers of one layer's new histograms against its baseline profile."""
    bh, nh = torch.tensor(base.entropy_histogram), torch.tensor(entropy_hist)
    bu, nu = torch.tensor(base.expert_counts), torch.tensor(expert_counts)
    vals = {
        "psi_entropy": F.psi(bh, nh, config.eps), "js_entropy": F.js_divergence(bh, nh),
        "psi_usage": F.psi(bu, nu, config.eps), "js_usage": F.js_divergence(bu, nu),
    }
    judged = min(base.tokens, tokens) >= config.min_tokens
    reasons = []
    for key, v in vals.items():
        limit = config.psi_threshold if key.startswith("psi") else config.js_threshold
        if not math.isnan(v) and v > limit:
            reasons.append(f"{key} {v:.3f} > {limit}")
    return LayerDrift(base.layer, base.tokens, tokens, **vals, judged=judged,
                      shifted=judged and bool(reasons), reasons=reasons if judged else [])


def score_drift(baseline: Baseline, report: MonitorReport, config: DriftConfig | None = None) -> DriftReport:
    """Score ``report`` (new traffic) against ``baseline`` layer by layer."""
    config = config or DriftConfig()
    baseline.check_matches(report.fingerprint)  # first: another model's baseline says so, not "bins differ"
    if report.layers and len(report.layers[0].entropy_histogram) != baseline.bins:
        raise BaselineError(f"the baseline has {baseline.bins} entropy bins, the monitor "
                            f"{len(report.layers[0].entropy_histogram)}: use the same bins")
    out = [layer_drift(b, s.entropy_histogram, s.expert_counts, s.tokens, config)
           for b, s in zip(baseline.layers, report.layers, strict=True)]
    for d in out:
        if d.shifted:
            log.warning("routing drift in layer %d: %s", d.layer, ", ".join(d.reasons))
    return DriftReport(out, config)

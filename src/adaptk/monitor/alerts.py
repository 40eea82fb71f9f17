"""Alert rules over the windows of routing statistics.

Defaults follow the routing-health literature:

- entropy drop: a router whose mean entropy falls sharply between windows is collapsing onto
  few experts (router/representation collapse, Chi et al. 2022; Zoph et al. 2022 ST-MoE);
  fires when the normalised entropy falls by more than ``entropy_drop`` (relative) in one window.
- persistent load skew: max load / mean load ("MaxVio" + 1 in Wang et al. 2024, loss-free
  balancing) above ``skew_threshold`` for ``skew_windows`` consecutive windows; 2.0 means the
  busiest expert takes twice its fair share, beyond Switch's usual capacity factors of 1.0-1.25
  (Fedus et al. 2022), so tokens overflow.
- dead experts: an expert that got no token in a window where each expert was expected to get
  at least ``dead_min_expected`` assignments.
- entropy near 0 (normalised < ``entropy_low``): deterministic routing, no hedging; near log N
  (normalised > ``entropy_high``): the router is not specialising (near-uniform).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from adaptk.monitor.state import LayerSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertConfig:
    entropy_drop: float = 0.25  # relative fall of normalised entropy between consecutive windows
    skew_threshold: float = 2.0  # max/mean load
    skew_windows: int = 3  # consecutive windows above skew_threshold
    dead_min_expected: float = 20.0  # expected assignments per expert before "dead" means anything
    entropy_low: float = 0.05  # normalised entropy below this: collapsed
    entropy_high: float = 0.98  # normalised entropy above this: near uniform
    min_tokens: int = 32  # windows with fewer tokens are not judged

    def __post_init__(self) -> None:
        if not 0.0 < self.entropy_drop < 1.0:
            raise ValueError(f"entropy_drop must lie in (0, 1) (a relative fall), got {self.entropy_drop}")
        if not self.skew_threshold > 1.0:
            raise ValueError(f"skew_threshold must be > 1 (max/mean load), got {self.skew_threshold}")
        if not (isinstance(self.skew_windows, int) and self.skew_windows >= 1):
            raise ValueError(f"skew_windows must be an integer >= 1, got {self.skew_windows!r}")
        if not self.dead_min_expected > 0:
            raise ValueError(f"dead_min_expected must be > 0, got {self.dead_min_expected}")
        if not 0.0 <= self.entropy_low < self.entropy_high <= 1.0:
            raise ValueError(
                f"need 0 <= entropy_low < entropy_high <= 1 (normalised entropy), got "
                f"{self.entropy_low} and {self.entropy_high}"
            )
        if not (isinstance(self.min_tokens, int) and self.min_tokens >= 1):
            raise ValueError(f"min_tokens must be an integer >= 1, got {self.min_tokens!r}")


@dataclass(frozen=True)
class Alert:
    rule: str  # entropy_drop | load_skew | dead_expert | entropy_collapse | entropy_uniform
    layer: int
    window: int
    value: float
    threshold: float
    message: str
    expert: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _judged(s: LayerSummary, cfg: AlertConfig) -> bool:
    return s.tokens >= cfg.min_tokens and not math.isnan(s.entropy_normalized)


def evaluate_alerts(windows: Sequence[tuple[int, LayerSummary]], cfg: AlertConfig | None = None,
                    *, since: int = -1) -> list[Alert]:
    """Alerts of one layer's windows ``[(window index, summary), ...]`` (oldest first), for the
    windows with index > ``since``. Earlier windows serve as history (drops, persistence)."""
    cfg = cfg or AlertConfig()
    out: list[Alert] = []
    for pos, (w, s) in enumerate(windows):
        if w <= since or not _judged(s, cfg):
            continue
        L, hn = s.layer, s.entropy_normalized
        if pos > 0:
            prev = windows[pos - 1][1]
            if _judged(prev, cfg) and prev.entropy_normalized > 0:
                fall = 1.0 - hn / prev.entropy_normalized
                if fall > cfg.entropy_drop:
                    out.append(Alert("entropy_drop", L, w, fall, cfg.entropy_drop,
                                     f"layer {L} window {w}: normalised routing entropy fell {fall:.0%} "
                                     f"({prev.entropy_normalized:.3f} -> {hn:.3f})"))
        run = windows[max(0, pos - cfg.skew_windows + 1): pos + 1]
        if len(run) == cfg.skew_windows and all(
            _judged(r, cfg) and r.max_over_mean > cfg.skew_threshold for _, r in run
        ):
            busiest = max(range(s.num_experts), key=lambda e: s.expert_counts[e])
            out.append(Alert("load_skew", L, w, s.max_over_mean, cfg.skew_threshold,
                             f"layer {L} window {w}: expert {busiest} carries {s.max_over_mean:.2f}x the mean "
                             f"load for {cfg.skew_windows} windows in a row", expert=busiest))
        assigned = sum(s.expert_counts)
        if assigned / s.num_experts >= cfg.dead_min_expected:
            for e, c in enumerate(s.expert_counts):
                if c == 0:
                    out.append(Alert("dead_expert", L, w, 0.0, cfg.dead_min_expected,
                                     f"layer {L} window {w}: expert {e} got no token of {s.tokens}", expert=e))
        if hn < cfg.entropy_low:
            out.append(Alert("entropy_collapse", L, w, hn, cfg.entropy_low,
                             f"layer {L} window {w}: normalised routing entropy {hn:.3f} is near 0 (collapsed)"))
        elif hn > cfg.entropy_high:
            out.append(Alert("entropy_uniform", L, w, hn, cfg.entropy_high,
                             f"layer {L} window {w}: normalised routing entropy {hn:.3f} is near log N "
                             "(router not specialising)"))
    for a in out:
        log.warning("routing alert %s: %s", a.rule, a.message)
    return out

"""Routing health during training: per-layer statistics and a collapse early warning."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from adaptk.monitor import functional as MF
from adaptk.routing.entropy import entropy_nats
from adaptk.routing.statistic import StatisticError, check_shape, entries
from adaptk.routing.stats import saved_tensor

log = logging.getLogger(__name__)
HIST_BINS = 10


@dataclass(frozen=True)
class LoadFigures:
    """The expert load of one layer over a log window (``LoadAccumulator.compute()``)."""

    num_experts: int
    expert_load: list[int]  # routing slots per expert, dropped ones included
    slots: int  # routing slots counted
    dropped: int  # slots dropped (not kept: over capacity)
    drop_rate: float  # dropped / slots (0 without slots)
    load_entropy: float  # log(effective experts) / log N, in [0, 1]; NaN without slots
    load_cv: float
    load_max_over_mean: float
    dead_fraction: float
    dead_experts: list[int]  # the experts with no slot


class LoadAccumulator:
    """Expert load (routing slots kept and dropped) summed over the steps since the last log: a
    ``adaptk.routing.statistic.Statistic`` whose ``compute()`` is its ``LoadFigures``."""

    def __init__(self, num_experts: int) -> None:
        self.num_experts = num_experts
        self.counts = torch.zeros(num_experts, dtype=torch.long)  # [N] slots routed
        self.dropped = self.slots = 0

    def update(self, indices: torch.Tensor, keep: torch.Tensor) -> None:
        """indices [T, K] the experts of each routing slot (in 0..N-1), keep [T, K] bool (False:
        dropped)."""
        self.counts += torch.bincount(indices.reshape(-1).cpu(), minlength=self.num_experts)
        self.slots += indices.numel()
        self.dropped += int((~keep).sum())

    add = update  # the training loop's name for it

    def reset(self) -> None:
        self.counts.zero_()
        self.dropped = self.slots = 0

    def merge(self, other: LoadAccumulator) -> None:
        """Add ``other``'s load (the same number of experts) to this one; exact."""
        check_shape("LoadAccumulator", {"num_experts": self.num_experts}, {"num_experts": other.num_experts},
                    "the merged load")
        self.counts += other.counts
        self.slots += other.slots
        self.dropped += other.dropped

    def state_dict(self) -> dict:
        return {"num_experts": self.num_experts, "counts": self.counts.tolist(), "slots": self.slots,
                "dropped": self.dropped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the load by a saved ``state_dict()``'s of as many experts; ``StatisticError``
        (and nothing changed) if it is not one."""
        kind = "LoadAccumulator"
        data = entries(kind, state, ["num_experts", "counts", "slots", "dropped"])
        check_shape(kind, {"num_experts": self.num_experts}, data, "the saved state")
        counts = saved_tensor(kind, "counts", data["counts"], self.counts)
        slots, dropped = data["slots"], data["dropped"]
        if not (type(slots) is int and type(dropped) is int and 0 <= dropped <= slots):
            raise StatisticError(f"{kind}: the saved slots {slots!r} and dropped {dropped!r} are not counts with "
                                 f"dropped <= slots; pass a state_dict() of this collector")
        self.counts, self.slots, self.dropped = counts, slots, dropped

    def compute(self) -> LoadFigures:
        counts = self.counts.double()
        n = self.num_experts
        # the same load statistics as adaptk.monitor (one implementation)
        return LoadFigures(
            num_experts=n, expert_load=self.counts.tolist(), slots=self.slots, dropped=self.dropped,
            drop_rate=self.dropped / max(self.slots, 1),
            load_entropy=math.log(MF.effective_experts(counts)) / math.log(n) if n > 1 else float("nan"),
            load_cv=MF.load_cv(counts), load_max_over_mean=MF.max_over_mean(counts),
            dead_fraction=MF.dead_fraction(counts), dead_experts=(counts == 0).nonzero().flatten().tolist(),
        )


def layer_health(probs: torch.Tensor, indices: torch.Tensor, load: LoadAccumulator,
                 token_loss: torch.Tensor | None) -> dict:
    """Statistics of one MoE layer. ``probs`` [T, N] and ``indices`` [T, K] of the current batch
    (entropy, per-expert loss); ``load`` the expert load over the log window; ``token_loss`` [T]
    (NaN where a token has no target)."""
    n = probs.shape[-1]
    # unchecked: a diverging run's NaN probabilities give NaN health figures (the divergence detector
    # reports it) instead of stopping the run at a log step
    ent = entropy_nats(probs.detach()) / math.log(n) if n > 1 else torch.zeros(probs.shape[0])  # [T]
    fig = load.compute()
    out = {
        "entropy_mean": float(ent.mean()),
        "entropy_hist": torch.histc(ent, bins=HIST_BINS, min=0.0, max=1.0).long().tolist(),
        "load_entropy": fig.load_entropy,
        "expert_load": fig.expert_load,
        "load_cv": fig.load_cv,
        "load_max_over_mean": fig.load_max_over_mean,
        "dead_fraction": fig.dead_fraction,
        "dead_experts": fig.dead_experts,
        "drop_rate": fig.drop_rate,
    }
    if token_loss is not None:
        top1 = indices[:, 0].cpu()
        tl = token_loss.detach().float().cpu()
        ok = ~torch.isnan(tl)
        sums = torch.zeros(n, dtype=torch.double).index_add_(0, top1[ok], tl[ok].double())
        cnt = torch.bincount(top1[ok], minlength=n).double()
        per = (sums / cnt).tolist()
        out["expert_loss"] = [None if math.isnan(v) else round(v, 4) for v in per]
    return out


@dataclass
class CollapseDetector:
    """Early warning of routing collapse, checked at every log.

    Fires (``logging.warning`` + returned events) on: a sharp entropy drop (the layer's mean
    normalised routing entropy falls by more than ``entropy_drop`` (relative) from its best value
    so far); a persistent load skew (max/mean expert load above ``skew`` for ``patience``
    consecutive logs, naming the hottest expert); dead experts (no routed token in the window),
    naming them. Nothing fires before ``warmup_logs`` logs."""

    entropy_drop: float = 0.5
    skew: float = 3.0
    patience: int = 3
    warmup_logs: int = 1
    _best: dict[int, float] = field(default_factory=dict)
    _skewed: dict[int, int] = field(default_factory=dict)
    _logs: int = 0

    def check(self, step: int, layers: list[dict]) -> list[dict]:
        self._logs += 1
        events: list[dict] = []
        for i, h in enumerate(layers):
            ent = h["entropy_mean"]
            best = max(self._best.get(i, ent), ent)
            self._best[i] = best
            hot = int(torch.tensor(h["expert_load"]).argmax())
            self._skewed[i] = self._skewed.get(i, 0) + 1 if h["load_max_over_mean"] > self.skew else 0
            if self._logs <= self.warmup_logs:
                continue
            if best > 0 and ent < (1 - self.entropy_drop) * best:
                events.append(dict(kind="entropy_drop", layer=i, expert=hot,
                                   detail=f"mean normalised routing entropy fell to {ent:.3f} from {best:.3f}"))
            if self._skewed[i] >= self.patience:
                events.append(dict(kind="load_skew", layer=i, expert=hot,
                                   detail=f"expert {hot} takes max/mean load {h['load_max_over_mean']:.2f} for "
                                          f"{self._skewed[i]} logs"))
            if h["dead_experts"]:
                events.append(dict(kind="dead_experts", layer=i, expert=h["dead_experts"][0],
                                   detail=f"experts {h['dead_experts']} received no token"))
        for e in events:
            e["step"] = step
            log.warning("routing collapse warning at step %d: layer %d, expert %d: %s (%s)",
                        step, e["layer"], e["expert"], e["detail"], e["kind"])
        return events

    def state_dict(self) -> dict:
        return {"best": dict(self._best), "skewed": dict(self._skewed), "logs": self._logs}

    def load_state_dict(self, d: dict) -> None:
        self._best = {int(k): v for k, v in d["best"].items()}
        self._skewed = {int(k): v for k, v in d["skewed"].items()}
        self._logs = d["logs"]

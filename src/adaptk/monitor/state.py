"""Sufficient statistics of one MoE layer's routing: bounded memory, in-place device updates,
exact merges.

Everything is a sum (integer counts, float64 sums) except the entropy moments, kept as
(count, mean, M2) and combined with Chan et al.'s parallel formula. ``update`` never syncs with
the host: non-finite tokens are masked out arithmetically (weights 0), not by boolean indexing.
``compute()`` (or its older name ``summary()``) copies the tensors out once and derives every
metric. ``LayerState`` is a ``adaptk.routing.statistic.Statistic``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from adaptk.monitor import functional as F
from adaptk.monitor.errors import MonitorError
from adaptk.routing.statistic import StatisticError, check_shape, entries
from adaptk.routing.stats import saved_tensor

DEFAULT_BINS = 32


@dataclass(frozen=True)
class LayerSummary:
    """The routing health of one layer over some tokens (a window or the whole run)."""

    layer: int
    name: str
    num_experts: int
    native_k: int
    tokens: int
    nonfinite_tokens: int
    entropy_mean: float  # nats
    entropy_std: float
    entropy_normalized: float  # mean entropy / log N, in [0, 1]
    entropy_histogram: list[int]  # fixed bins over [0, log N]
    k_histogram: list[int]  # k_histogram[k] = tokens that kept k experts
    average_k: float
    expert_counts: list[int]
    load_cv: float
    max_over_mean: float
    gini: float
    dead_fraction: float
    effective_experts: float
    mutual_information: float  # nats
    capacity_factor: float
    overflow_rate: float  # assignments over capacity / assignments
    batches_with_overflow: int
    batches: int

    def to_dict(self) -> dict:
        return asdict(self)


class LayerStateError(MonitorError, StatisticError):
    """Layer states of different shapes merged, or a saved state that does not fit a layer."""


class LayerState:
    """Running sufficient statistics of one layer (state, so a class): a ``Statistic`` whose
    ``compute()`` is its ``LayerSummary``."""

    def __init__(self, layer: int, name: str, num_experts: int, native_k: int, *,
                 bins: int = DEFAULT_BINS, capacity_factor: float = 1.25, device=None) -> None:
        self.layer, self.name = layer, name
        self.num_experts, self.native_k = num_experts, native_k
        self.bins, self.capacity_factor = bins, capacity_factor
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.reset()

    def reset(self) -> None:
        z = lambda n, dt=torch.long: torch.zeros(n, dtype=dt, device=self.device)  # noqa: E731
        n = self.num_experts
        self.tokens = z(())  # finite tokens counted
        self.nonfinite = z(())
        self.h_count = z((), torch.float64)  # entropy moments (Chan): count, mean, M2
        self.h_mean = z((), torch.float64)
        self.h_m2 = z((), torch.float64)
        self.h_sum = z((), torch.float64)  # Σ H(p) (exact sum, for the mutual information)
        self.h_hist = z(self.bins)  # [B]
        self.k_hist = z(n + 1)  # [N+1]
        self.expert_counts = z(n)  # [N]
        self.prob_sum = z(n, torch.float64)  # [N] Σ_t p_t
        self.assigned = z(())  # expert-token pairs routed
        self.overflow = z(())  # pairs over capacity
        self.overflow_batches = z(())
        self.batches = z(())

    def _like(self) -> LayerState:
        return LayerState(self.layer, self.name, self.num_experts, self.native_k, bins=self.bins,
                          capacity_factor=self.capacity_factor, device=self.device)

    def _tensors(self) -> list[str]:
        return [k for k, v in vars(self).items() if isinstance(v, torch.Tensor)]

    @torch.no_grad()
    def update(self, probs: torch.Tensor, indices: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """probs [T, N] routing distribution, indices [T, K] chosen experts (N = dropped slot),
        valid [T] bool (False = non-finite router output, counted but kept out of the stats)."""
        n = self.num_experts
        probs = probs.reshape(-1, n).to(self.device)
        indices = indices.reshape(probs.shape[0], -1).to(self.device)
        if valid is None:
            valid = torch.isfinite(probs).all(dim=-1)  # [T]
        valid = valid.to(self.device)
        w = valid.long()  # [T]
        wf = valid.double()
        p = torch.where(valid[:, None], probs.double(), torch.zeros((), dtype=torch.float64, device=self.device))
        h = F.entropy(p)  # [T] float64, 0 where masked
        n_b = wf.sum()
        self.tokens += w.sum()
        self.nonfinite += (1 - w).sum()
        # entropy moments, Chan's combination of (count, mean, M2)
        mean_b = (h * wf).sum() / n_b.clamp_min(1.0)
        m2_b = (wf * (h - mean_b) ** 2).sum()
        total = self.h_count + n_b
        delta = mean_b - self.h_mean
        self.h_m2 += m2_b + delta * delta * self.h_count * n_b / total.clamp_min(1.0)
        self.h_mean += delta * n_b / total.clamp_min(1.0)
        self.h_count.copy_(total)
        self.h_sum += (h * wf).sum()
        self.h_hist.scatter_add_(0, F.entropy_bin_index(h, n, self.bins), w)
        chosen = (indices >= 0) & (indices < n)  # [T, K]
        k = chosen.long().sum(dim=-1)  # [T]
        self.k_hist.scatter_add_(0, k.clamp_max(n), w)
        slot_w = (chosen & valid[:, None]).long()  # [T, K]
        counts = torch.zeros(n + 1, dtype=torch.long, device=self.device)
        counts.scatter_add_(0, indices.clamp(0, n).reshape(-1), slot_w.reshape(-1))
        batch_counts = counts[:n]  # [N]
        self.expert_counts += batch_counts
        self.prob_sum += p.sum(dim=0)
        self.assigned += batch_counts.sum()
        cap = torch.floor(self.capacity_factor * n_b * self.native_k / n)
        over = (batch_counts.double() - cap).clamp_min(0).sum().long()
        self.overflow += over
        self.overflow_batches += (over > 0).long()
        self.batches += 1

    def _shape(self) -> dict:
        return {"num_experts": self.num_experts, "native_k": self.native_k, "bins": self.bins,
                "capacity_factor": self.capacity_factor}

    @torch.no_grad()
    def merge(self, other: LayerState) -> None:
        """Add ``other``'s statistics to these (same layer shape: experts, native k, bins and
        capacity factor), as if this state had seen other's batches after its own: exact for every
        count, the entropy moments (Chan's combination) and float sums to float64 rounding.
        ``LayerStateError`` (a ``MonitorError``) for another shape."""
        check_shape(f"layer {self.layer}", self._shape(), other._shape(), f"the merged state of layer {other.layer}",
                    LayerStateError)
        o = {k: getattr(other, k).to(self.device) for k in other._tensors()}
        total = self.h_count + o["h_count"]
        delta = o["h_mean"] - self.h_mean
        self.h_m2 += o["h_m2"] + delta * delta * self.h_count * o["h_count"] / total.clamp_min(1.0)
        self.h_mean += delta * o["h_count"] / total.clamp_min(1.0)
        self.h_count.copy_(total)
        for key in self._tensors():
            if key not in ("h_count", "h_mean", "h_m2"):
                getattr(self, key).add_(o[key])

    def clone(self) -> LayerState:
        out = self._like()
        for key in self._tensors():
            setattr(out, key, getattr(self, key).clone())
        return out

    def state_dict(self) -> dict:
        """Plain-Python sufficient statistics (JSON-able), for saving or sending between processes."""
        meta = dict(layer=self.layer, name=self.name, num_experts=self.num_experts,
                    native_k=self.native_k, bins=self.bins, capacity_factor=self.capacity_factor)
        return {**meta, **{k: getattr(self, k).tolist() for k in self._tensors()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the statistics by a saved ``state_dict()``'s of the same shape;
        ``LayerStateError`` (and nothing changed) if it is not one."""
        kind, keys = f"layer {self.layer}", self._tensors()
        data = entries(kind, state, [*self._shape(), *keys], LayerStateError)
        check_shape(kind, self._shape(), data, "the saved state", LayerStateError)
        values = {key: saved_tensor(kind, key, data[key], getattr(self, key), LayerStateError) for key in keys}
        for key, value in values.items():
            setattr(self, key, value)

    @classmethod
    def from_state_dict(cls, data: Mapping[str, Any], device=None) -> LayerState:
        """A new state holding a saved ``state_dict()``'s statistics (its layer and shape)."""
        meta = entries("a saved layer state", data,
                       ["layer", "name", "num_experts", "native_k", "bins", "capacity_factor"], LayerStateError)
        try:
            out = cls(meta["layer"], meta["name"], meta["num_experts"], meta["native_k"], bins=meta["bins"],
                      capacity_factor=meta["capacity_factor"], device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise LayerStateError(f"a saved layer state has a malformed shape ({err}); pass a state_dict() of a "
                                  f"LayerState") from err
        out.load_state_dict(data)
        return out

    def compute(self) -> LayerSummary:
        s = {k: getattr(self, k).cpu() for k in self._tensors()}
        tokens, counts = int(s["tokens"]), s["expert_counts"]
        nan = float("nan")
        log_n = math.log(self.num_experts) if self.num_experts > 1 else 1.0
        mean = float(s["h_mean"]) if tokens else nan
        k_hist = s["k_hist"].tolist()
        assigned = int(s["assigned"])
        return LayerSummary(
            layer=self.layer, name=self.name, num_experts=self.num_experts, native_k=self.native_k,
            tokens=tokens, nonfinite_tokens=int(s["nonfinite"]),
            entropy_mean=mean,
            entropy_std=math.sqrt(max(float(s["h_m2"]) / tokens, 0.0)) if tokens else nan,
            entropy_normalized=mean / log_n if tokens else nan,
            entropy_histogram=s["h_hist"].tolist(),
            k_histogram=k_hist,
            average_k=sum(i * c for i, c in enumerate(k_hist)) / tokens if tokens else nan,
            expert_counts=counts.tolist(),
            load_cv=F.load_cv(counts), max_over_mean=F.max_over_mean(counts), gini=F.gini(counts),
            dead_fraction=F.dead_fraction(counts) if assigned else nan,
            effective_experts=F.effective_experts(counts),
            mutual_information=F.mi_from_sums(s["prob_sum"], float(s["h_sum"]), tokens),
            capacity_factor=self.capacity_factor,
            overflow_rate=int(s["overflow"]) / assigned if assigned else nan,
            batches_with_overflow=int(s["overflow_batches"]), batches=int(s["batches"]),
        )

    summary = compute  # the monitor's name for it

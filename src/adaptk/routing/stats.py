"""Per-layer routing statistics collected while a patched model runs.

Counters live on the layer's device and are updated in place (no host sync); ``compute()``
copies them out once. ``LayerStats`` is a ``adaptk.routing.statistic.Statistic``; the C routers
count into its counters in place, laid out as ``routing/csrc/counters.h`` declares
(``adaptk.routing.counters``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from adaptk.routing import counters
from adaptk.routing.statistic import StatisticError, check_shape, entries


@dataclass(frozen=True)
class LayerReport:
    """What one MoE layer did since the patch (or the last ``reset``)."""

    layer: int
    name: str
    num_experts: int
    native_k: int
    tokens: int
    entropy_mean: float  # nats
    entropy_std: float
    k_histogram: list[int]  # k_histogram[k] = tokens that kept k experts
    average_k: float
    expert_counts: list[int]  # tokens routed to each expert (router decisions)
    executed_pairs: int  # expert-token rows counted inside the expert matmuls
    native_pairs: int  # tokens x native k: what the unpatched model runs
    nonfinite_tokens: int

    @property
    def compute_fraction(self) -> float:
        return self.executed_pairs / self.native_pairs if self.native_pairs else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "compute_fraction": self.compute_fraction}


def _detached(t: torch.Tensor) -> torch.Tensor:
    """``t`` without its autograd history (``detach`` only where there is one: it is an op)."""
    return t.detach() if t.requires_grad else t


def _joined(parts) -> torch.Tensor:
    """The pending parts as one tensor (no copy for a single part)."""
    return torch.cat(parts) if len(parts) > 1 else parts[0]


FOLD_TOKENS = 1024  # pending tokens (or calls) after which a layer's small-batch updates are folded


def saved_tensor(kind: str, key: str, value: Any, like: torch.Tensor,
                 error: type[StatisticError] = StatisticError) -> torch.Tensor:
    """A saved state's entry ``key`` (plain Python) as a tensor of ``like``'s dtype, shape and
    device, or ``error`` saying what is wrong with it (integer counters must not be negative)."""
    try:
        out = torch.tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise error(f"{kind}: the saved {key} is not {like.dtype} numbers of shape {tuple(like.shape)}: "
                    f"{err}") from err
    if out.numel() == 0 == like.numel():
        out = out.reshape(like.shape)  # an empty list holds no shape: [] for [0, K]
    if out.shape != like.shape:
        raise error(f"{kind}: the saved {key} has shape {tuple(out.shape)}, this collector's "
                    f"{tuple(like.shape)}")
    if not out.is_floating_point():  # counts: whole and not negative (torch.tensor truncates 1.5 to 1)
        whole = torch.equal(torch.tensor(value, dtype=torch.float64, device=like.device).reshape(out.shape),
                            out.double())
        if not whole or bool((out < 0).any()):
            raise error(f"{kind}: the saved {key} holds a count that is negative or not whole; pass a "
                        f"state_dict() of this collector")
    return out


class LayerStats:
    """Running counters of one layer (state, so a class): a ``Statistic`` whose ``compute()``
    is its ``LayerReport``.

    Updates of small batches (decode steps) are kept as references and folded into the counters
    in one pass every ``FOLD_TOKENS`` tokens or calls, so that a one-token step pays for
    remembering two tensors rather than for a dozen small ops; ``compute()`` folds what is
    pending. The counters ``counts`` and ``entropy_moments`` are laid out as ``layout`` says
    (``counters.h``: the C routers add to them in place, under ``lock``)."""

    def __init__(self, layer: int, name: str, num_experts: int, native_k: int, kmax: int, device) -> None:
        self.layer, self.name = layer, name
        self.num_experts, self.native_k, self.kmax = num_experts, native_k, kmax
        self.device = device
        self.layout = lay = counters.layout(kmax, num_experts)

        z = lambda n, dt=torch.long: torch.zeros(n, dtype=dt, device=device)  # noqa: E731
        self.entropy_moments = z(lay.moments_size, torch.float64)  # Σ H and Σ H², where layout says
        # one counter for both histograms, so one scatter per fold: the k histogram, the experts and
        # the dropped slots' sentinel, where layout says
        self.counts = z(lay.size)
        self.k_hist = self.counts[lay.khist: lay.khist + self.kmax + 1]  # views into counts
        self.expert_counts = self.counts[lay.experts: lay.experts + self.num_experts]
        self._moment_slots = torch.tensor([lay.moment_sum, lay.moment_sumsq], device=device)
        self.matmul_rows = z(self.num_experts)
        self.nonfinite = z(())
        # held while the counters or the pending list change: threads serving one model share them
        # (torch's in-place ops and the native router's C call run without the GIL's protection)
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero the counters, in place (the native router holds their addresses)."""
        with self.lock:
            for counter in (self.entropy_moments, self.counts, self.matmul_rows, self.nonfinite):
                counter.zero_()
            self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
            self._pending_logits: list[torch.Tensor] = []  # deferred finite checks, counted at the fold
            self._pending_tokens = 0

    def update(self, entropy: torch.Tensor, candidates: torch.Tensor, drop: torch.Tensor,
               logits: torch.Tensor | None = None) -> None:
        """entropy [T] f32, candidates [T, K] int64, drop [T, K] bool (the slots not kept): the
        router's own tensors of this call, which nothing changes later (the indices handed to
        the model are not kept, in case a model edits them in place). ``logits`` [T, N], if
        given, are checked for NaN/Inf at the fold (the deferred check: no op per call)."""
        t = entropy.shape[0]
        with self.lock:
            self._pending.append((_detached(entropy), candidates, drop))  # no autograd graph kept alive
            if logits is not None:
                self._pending_logits.append(_detached(logits))
            self._pending_tokens += t
            if self._pending_tokens >= FOLD_TOKENS or len(self._pending) >= FOLD_TOKENS:
                self._fold()

    def add_rows(self, rows: torch.Tensor) -> None:
        """rows [N]: the rows each expert's matmuls received in one call (the experts' forward)."""
        with self.lock:
            self.matmul_rows.add_(rows)

    @property
    def tokens(self) -> int:
        """Tokens counted so far: the k histogram's total (each token counts once there, whoever
        counts it: the fold, or the C routers, which add to the counters in place under ``lock``
        and so count no token anywhere else) and the pending ones. Reads the counters (a sync
        on an accelerator)."""
        with self.lock:
            return int(self.k_hist.sum()) + self._pending_tokens

    @torch.no_grad()
    def _fold(self) -> None:
        if not self._pending:
            return
        entropy, candidates, drop = (_joined(parts) for parts in zip(*self._pending))  # [T'], [T', K] x2
        self._pending, self._pending_tokens = [], 0
        if self._pending_logits:
            logits = _joined(self._pending_logits)  # [T', N]
            self._pending_logits = []
            self.nonfinite += (~torch.isfinite(logits).all(dim=-1)).sum()  # tokens with a NaN/Inf logit
        e = entropy.double()  # [T']
        self.entropy_moments.index_add_(0, self._moment_slots, torch.stack((e.sum(), e.dot(e))))
        k = drop.shape[-1] - drop.sum(dim=-1)  # [T'] experts kept
        # sentinel N where dropped: it lands on the dropped slots' counter (layout.dropped)
        indices = candidates.masked_fill(drop, self.num_experts)  # [T', K]
        ids = torch.cat((k + self.layout.khist, indices.reshape(-1) + self.layout.experts))  # [T' + T'*K]
        self.counts.scatter_add_(0, ids, torch.ones_like(ids))

    def _shape(self) -> dict:
        return {"num_experts": self.num_experts, "native_k": self.native_k, "kmax": self.kmax}

    def _folded(self) -> dict[str, torch.Tensor]:
        """A copy of the counters with what is pending folded in (under the lock), by meaning."""
        lay = self.layout
        with self.lock:
            self._fold()
            m = self.entropy_moments.clone()
            return {"k_histogram": self.k_hist.clone(), "expert_counts": self.expert_counts.clone(),
                    "dropped_slots": self.counts[lay.dropped].clone(),
                    "entropy_sum": m[lay.moment_sum], "entropy_sumsq": m[lay.moment_sumsq],
                    "matmul_rows": self.matmul_rows.clone(), "nonfinite": self.nonfinite.clone()}

    def _targets(self) -> dict[str, torch.Tensor]:
        """The counters (views: in place) by the names of ``_folded``."""
        lay = self.layout
        return {"k_histogram": self.k_hist, "expert_counts": self.expert_counts,
                "dropped_slots": self.counts[lay.dropped], "entropy_sum": self.entropy_moments[lay.moment_sum],
                "entropy_sumsq": self.entropy_moments[lay.moment_sumsq], "matmul_rows": self.matmul_rows,
                "nonfinite": self.nonfinite}

    @torch.no_grad()
    def merge(self, other: LayerStats) -> None:
        """Add ``other``'s counters (the same num_experts, native_k and kmax) to these, in place:
        exact for every count, the entropy sums to float64 rounding. ``StatisticError`` for
        statistics of another shape (nothing changed)."""
        check_shape("LayerStats", self._shape(), other._shape(), "the merged statistics")
        theirs = other._folded()  # under other's lock only: never both locks at once
        with self.lock:
            self._fold()
            for key, target in self._targets().items():
                target.add_(theirs[key].to(target.device))

    def state_dict(self) -> dict:
        """The counters as plain Python (JSON-able), by meaning (not by counters.h's layout),
        with the layer's shape."""
        meta = {"layer": self.layer, "name": self.name, **self._shape()}
        return {**meta, **{key: value.tolist() for key, value in self._folded().items()}}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the counters (in place: the C routers keep their addresses) by a saved
        ``state_dict()``'s of the same shape; ``StatisticError`` (and nothing changed) if it is
        not one."""
        targets = self._targets()
        data = entries("LayerStats", state, [*self._shape(), *targets])
        check_shape("LayerStats", self._shape(), data, "the saved state")
        values = {key: saved_tensor("LayerStats", key, data[key], target) for key, target in targets.items()}
        with self.lock:
            self._pending, self._pending_logits, self._pending_tokens = [], [], 0
            for key, target in targets.items():
                target.copy_(values[key])

    def compute(self) -> LayerReport:
        """The ``LayerReport`` of what was counted (what is pending folded first)."""
        lay = self.layout
        with self.lock:  # read out under the lock, as few copies as can be (a sync on an accelerator)
            self._fold()
            moments = self.entropy_moments.tolist()
            hist, experts = self.k_hist.tolist(), self.expert_counts.tolist()
            executed, nonfinite = int(self.matmul_rows.sum()), int(self.nonfinite)
        h_sum, h_sumsq = moments[lay.moment_sum], moments[lay.moment_sumsq]
        tokens = sum(hist)  # each token counted once, by its kept k
        mean = h_sum / tokens if tokens else float("nan")
        var = h_sumsq / tokens - mean * mean if tokens else float("nan")
        return LayerReport(
            layer=self.layer,
            name=self.name,
            num_experts=self.num_experts,
            native_k=self.native_k,
            tokens=tokens,
            entropy_mean=mean,
            entropy_std=max(var, 0.0) ** 0.5 if tokens else float("nan"),
            k_histogram=hist,
            average_k=sum(i * c for i, c in enumerate(hist)) / tokens if tokens else float("nan"),
            expert_counts=experts,
            executed_pairs=executed,
            native_pairs=tokens * self.native_k,
            nonfinite_tokens=nonfinite,
        )

    report = compute  # the patch's name for it (PatchHandle.report)


@dataclass(frozen=True)
class PatchReport:
    """All layers, plus the totals a user asks for first."""

    layers: list[LayerReport]

    @property
    def tokens(self) -> int:
        return self.layers[0].tokens if self.layers else 0

    @property
    def average_k(self) -> float:
        toks = sum(r.tokens for r in self.layers)
        return sum(r.average_k * r.tokens for r in self.layers) / toks if toks else float("nan")

    @property
    def executed_pairs(self) -> int:
        return sum(r.executed_pairs for r in self.layers)

    @property
    def native_pairs(self) -> int:
        return sum(r.native_pairs for r in self.layers)

    @property
    def compute_fraction(self) -> float:
        return self.executed_pairs / self.native_pairs if self.native_pairs else float("nan")

    def to_dict(self) -> dict:
        return {
            "average_k": self.average_k,
            "executed_pairs": self.executed_pairs,
            "native_pairs": self.native_pairs,
            "compute_fraction": self.compute_fraction,
            "layers": [r.to_dict() for r in self.layers],
        }

    def table(self) -> str:
        """A plain-text table, one row per layer."""
        head = f"{'layer':>5} {'tokens':>8} {'H mean':>7} {'H std':>6} {'avg k':>6} {'compute':>8}  k histogram"
        rows = [head]
        for r in self.layers:
            rows.append(
                f"{r.layer:>5} {r.tokens:>8} {r.entropy_mean:>7.3f} {r.entropy_std:>6.3f} "
                f"{r.average_k:>6.3f} {r.compute_fraction:>8.3f}  {r.k_histogram}"
            )
        rows.append(
            f"total: average k {self.average_k:.3f}, executed {self.executed_pairs} of "
            f"{self.native_pairs} expert-token pairs (compute fraction {self.compute_fraction:.3f})"
        )
        return "\n".join(rows)

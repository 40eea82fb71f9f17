"""One pass over some text that records each MoE layer's routing: entropies and ranked probs.

Forward pre-hooks on the routers recompute the family's scores on the router input (no change
to the model's output). Per layer we keep, for at most ``max_tokens`` tokens:
``entropy`` [T] float32 (nats, τ = 1) and ``ranked`` [T, Kc] float32, the probabilities of the
top Kc experts in the model's own ranking order (Kc = min(N, max(8, 2·native k))).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adaptk.engines.transformers.patch import patch
from adaptk.models import MoELayer, find_moe_layers
from adaptk.routing import FixedTopK, routing_entropy
from adaptk.routing.statistic import StatisticError, check_shape, entries
from adaptk.routing.stats import saved_tensor

log = logging.getLogger(__name__)


@dataclass
class LayerRouting:
    index: int
    num_experts: int
    native_k: int
    entropy: torch.Tensor  # [T] float32
    ranked: torch.Tensor  # [T, Kc] float32, model ranking order
    expert_counts: torch.Tensor  # [N] int64, native top-k choices


@dataclass
class RouterStats:
    layers: list[LayerRouting]
    tokens: int
    forward_passes: int = 1
    meta: dict = field(default_factory=dict)

    @property
    def native_k(self) -> list[int]:
        return [layer.native_k for layer in self.layers]

    def pooled_entropy(self) -> torch.Tensor:
        return torch.cat([layer.entropy for layer in self.layers])


class LayerRecorder:
    """The routing of one layer's first ``max_tokens`` tokens, as a calibration fits it: a
    ``adaptk.routing.statistic.Statistic`` whose ``compute()`` is its ``LayerRouting``. Keeps
    per token its entropy, its top Kc probabilities (the model's ranking order) and its native
    top-k experts (whose counts ``compute()`` gives), so that ``merge`` appends another
    recorder's tokens exactly, up to the cap."""

    def __init__(self, index: int, num_experts: int, native_k: int, max_tokens: int) -> None:
        self.index, self.num_experts, self.native_k, self.max_tokens = index, num_experts, native_k, max_tokens
        self.kc = min(num_experts, max(8, 2 * native_k))
        self.reset()

    def reset(self) -> None:
        self.entropy: list[torch.Tensor] = []  # [T] float32 each
        self.ranked: list[torch.Tensor] = []  # [T, Kc] float32 each
        self.top: list[torch.Tensor] = []  # [T, native k] int64 each: the native top-k experts
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count >= self.max_tokens

    @torch.no_grad()
    def update(self, probs: torch.Tensor, rank: torch.Tensor) -> None:
        """probs [T, N] the routing distribution and rank [T, N] the model's ranking scores of
        one router call; the tokens past the cap are not kept."""
        room = self.max_tokens - self.count
        if room <= 0:
            return
        probs, rank = probs[:room].float(), rank[:room]  # [T, N]
        order = torch.topk(rank.float(), self.kc, dim=-1, sorted=True).indices  # [T, Kc]
        self._append(routing_entropy(probs).cpu(), probs.gather(1, order).cpu(),
                     order[:, : self.native_k].cpu())

    def _append(self, entropy: torch.Tensor, ranked: torch.Tensor, top: torch.Tensor) -> None:
        self.entropy.append(entropy)
        self.ranked.append(ranked)
        self.top.append(top)
        self.count += entropy.shape[0]

    def _joined(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """entropy [T], ranked [T, Kc] and top [T, native k], in the order recorded."""
        e = torch.cat(self.entropy) if self.entropy else torch.zeros(0)
        r = torch.cat(self.ranked) if self.ranked else torch.zeros(0, self.kc)
        t = torch.cat(self.top) if self.top else torch.zeros(0, self.native_k, dtype=torch.long)
        return e, r, t

    def _shape(self) -> dict:
        return {"num_experts": self.num_experts, "native_k": self.native_k, "kc": self.kc}

    def merge(self, other: LayerRecorder) -> None:
        """Append ``other``'s tokens (a recorder of as many experts and native k) after these,
        up to this recorder's cap: exactly what this one would have kept of other's calls."""
        check_shape(f"the recorder of layer {self.index}", self._shape(), other._shape(),
                    f"the merged recorder of layer {other.index}")
        room = self.max_tokens - self.count
        if room > 0 and other.count:
            e, r, t = other._joined()
            self._append(e[:room], r[:room], t[:room])

    def state_dict(self) -> dict:
        e, r, t = self._joined()
        return {"index": self.index, **self._shape(), "max_tokens": self.max_tokens,
                "entropy": e.tolist(), "ranked": r.tolist(), "top": t.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the recorded tokens by a saved ``state_dict()``'s (as many experts and native
        k, no more tokens than this recorder's cap); ``StatisticError`` (and nothing changed) if
        it is not one."""
        kind = f"the recorder of layer {self.index}"
        data = entries(kind, state, [*self._shape(), "entropy", "ranked", "top"])
        check_shape(kind, self._shape(), data, "the saved state")
        t = len(data["entropy"]) if isinstance(data["entropy"], list) else -1
        if not 0 <= t <= self.max_tokens:
            raise StatisticError(f"{kind}: the saved state holds {t if t >= 0 else 'no list of'} entropies; this "
                                 f"recorder keeps a list of at most {self.max_tokens}")
        like = (torch.zeros(t), torch.zeros(t, self.kc), torch.zeros(t, self.native_k, dtype=torch.long))
        e, r, top = (saved_tensor(kind, key, data[key], ref) for key, ref in zip(("entropy", "ranked", "top"), like))
        if bool((top >= self.num_experts).any()):
            raise StatisticError(f"{kind}: the saved top experts hold an id past {self.num_experts - 1}")
        self.reset()
        if t:
            self._append(e, r, top)

    def compute(self) -> LayerRouting:
        e, r, t = self._joined()
        return LayerRouting(self.index, self.num_experts, self.native_k, e, r,
                            torch.bincount(t.reshape(-1), minlength=self.num_experts))


class _Recorder(LayerRecorder):
    """A ``LayerRecorder`` fed by a forward pre-hook on the layer's router: it recomputes the
    family's scores on the router input (no change to the model's output)."""

    def __init__(self, layer: MoELayer, max_tokens: int) -> None:
        super().__init__(layer.index, layer.num_experts, layer.native_k, max_tokens)
        self.layer = layer

    @torch.no_grad()
    def __call__(self, module: nn.Module, args: tuple, kwargs: dict | None = None) -> None:
        if self.full:
            return
        hidden = args[0] if args else kwargs.get("hidden_states")
        s = self.layer.family.scores(module, hidden)
        self.update(s.probs, s.rank)


class RouterRecorder:
    """Context manager: record routing of every MoE layer while the model runs."""

    def __init__(self, model: nn.Module, max_tokens: int = 16384) -> None:
        self.model = model
        self.recorders = [_Recorder(layer, max_tokens) for layer in find_moe_layers(model)]
        self.handles: list = []

    def __enter__(self) -> RouterRecorder:
        for rec in self.recorders:
            self.handles.append(rec.layer.router.register_forward_pre_hook(rec, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def result(self) -> RouterStats:
        layers = [r.compute() for r in self.recorders]
        return RouterStats(layers, tokens=layers[0].entropy.shape[0] if layers else 0)


@torch.no_grad()
def collect_router_stats(model: nn.Module, ids: torch.Tensor, window: int = 512,
                         max_tokens: int = 16384, progress: bool = False, batch_size: int = 8) -> RouterStats:
    """Run ``ids`` [L] through the model in non-overlapping windows once and record routing."""
    from tqdm.auto import tqdm

    from adaptk.measure import check_window

    ids = ids.reshape(-1)[:max_tokens]
    check_window(model, min(window, ids.shape[0]))
    full = ids.shape[0] // window * window
    chunks = list(ids[:full].reshape(-1, window).split(batch_size)) if full else []  # [B, W] each
    if full < ids.shape[0]:
        chunks.append(ids[full:].unsqueeze(0))
    device = next(model.parameters()).device
    ctx = contextlib.nullcontext()
    if getattr(model, "_adaptk_patch", None) is None:
        # the native routing through adaptk's variable-K back-end: the same outputs (bit for bit
        # at native k) and, on CPU, much faster than transformers' eager expert loop
        native = min(layer.native_k for layer in find_moe_layers(model))
        ctx = patch(model, FixedTopK(native))
    with ctx, RouterRecorder(model, max_tokens) as rec:
        for x in tqdm(chunks, desc="router statistics", disable=not progress, leave=False):
            model(input_ids=x.to(device), use_cache=False)
    stats = rec.result()
    stats.forward_passes = 1
    log.info("collected routing of %d tokens over %d MoE layers", stats.tokens, len(stats.layers))
    return stats

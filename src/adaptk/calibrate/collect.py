"""One pass over some text that records each MoE layer's routing: entropies and ranked probs.

Forward pre-hooks on the routers recompute the family's scores on the router input (no change
to the model's output). Per layer we keep, for at most ``max_tokens`` tokens:
``entropy`` [T] float32 (nats, τ = 1) and ``ranked`` [T, Kc] float32, the probabilities of the
top Kc experts in the model's own ranking order (Kc = min(N, max(8, 2·native k))).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from adaptk.models import MoELayer, find_moe_layers
from adaptk.patch import patch
from adaptk.routing import FixedTopK, routing_entropy

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


class _Recorder:
    def __init__(self, layer: MoELayer, max_tokens: int) -> None:
        self.layer, self.max_tokens = layer, max_tokens
        n, k = layer.num_experts, layer.native_k
        self.kc = min(n, max(8, 2 * k))
        self.entropy: list[torch.Tensor] = []
        self.ranked: list[torch.Tensor] = []
        self.count = 0
        self.expert_counts = torch.zeros(n, dtype=torch.long)

    @torch.no_grad()
    def __call__(self, module: nn.Module, args: tuple, kwargs: dict | None = None) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        room = self.max_tokens - self.count
        if room <= 0:
            return
        s = self.layer.family.scores(module, hidden)
        probs, rank = s.probs[:room].float(), s.rank[:room]  # [T, N]
        order = torch.topk(rank.float(), self.kc, dim=-1, sorted=True).indices  # [T, Kc]
        self.entropy.append(routing_entropy(probs).cpu())
        self.ranked.append(probs.gather(1, order).cpu())
        top = order[:, : self.layer.native_k].reshape(-1).cpu()
        self.expert_counts += torch.bincount(top, minlength=self.layer.num_experts)
        self.count += probs.shape[0]

    def result(self) -> LayerRouting:
        e = torch.cat(self.entropy) if self.entropy else torch.zeros(0)
        r = torch.cat(self.ranked) if self.ranked else torch.zeros(0, self.kc)
        return LayerRouting(self.layer.index, self.layer.num_experts, self.layer.native_k, e, r,
                            self.expert_counts)


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
        layers = [r.result() for r in self.recorders]
        return RouterStats(layers, tokens=layers[0].entropy.shape[0] if layers else 0)


@torch.no_grad()
def collect_router_stats(model: nn.Module, ids: torch.Tensor, window: int = 512,
                         max_tokens: int = 16384, progress: bool = False, batch_size: int = 8) -> RouterStats:
    """Run ``ids`` [L] through the model in non-overlapping windows once and record routing."""
    from tqdm.auto import tqdm

    from adaptk.evaluate.perplexity import check_window

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

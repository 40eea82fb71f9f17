"""The two batching strategies of the paper (§4.3), around the variable-K back-end.

- padded: every token runs its top-Kmax slots; dropped slots are re-pointed at the token's first
  expert with weight 0 (static shapes, as needed by CUDA graphs; costs fixed-Kmax compute). This
  is a baseline only: ``adaptk.patch`` never multiplies a dropped slot.
- grouped by k: tokens are split by their number of kept experts and each group runs as a
  fixed-k call with no sentinel (one call per distinct k; each reads the expert weights again).

The default back-end (``variable_k_experts_forward``) is a third way: one call, sentinel slots
sorted to the end and never computed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from adaptk.experts.variable_k import variable_k_experts_forward

Backend = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _default_backend(experts, hidden, index, weights):
    return variable_k_experts_forward(experts, hidden, index, weights, order="slot")


def padded_experts_forward(
    experts: nn.Module, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor,
    backend: Backend = _default_backend,
) -> torch.Tensor:
    """hidden [T, H], index/weights [T, K] with sentinels -> [T, H]; all T·K slots computed."""
    n = experts.num_experts
    dropped = top_k_index >= n  # [T, K]
    first = top_k_index[:, :1].clamp_max(n - 1)  # [T, 1]
    index = torch.where(dropped, first, top_k_index)
    weights = top_k_weights.masked_fill(dropped, 0)
    return backend(experts, hidden, index, weights)


def grouped_by_k_experts_forward(
    experts: nn.Module, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor,
    backend: Backend = _default_backend,
) -> torch.Tensor:
    """hidden [T, H], index/weights [T, K] with sentinels -> [T, H]; one call per distinct k."""
    n = experts.num_experts
    kept = top_k_index < n  # [T, K]
    k = kept.sum(-1)  # [T]
    # kept slots first, in their slot order: a stable sort on "dropped"
    order = torch.sort((~kept).to(torch.uint8), dim=-1, stable=True).indices  # [T, K]
    index, weights = top_k_index.gather(1, order), top_k_weights.gather(1, order)
    out = torch.zeros_like(hidden)
    for kk in torch.unique(k).tolist():  # one host sync per layer
        if kk == 0:
            continue
        rows = (k == kk).nonzero().squeeze(1)  # [Tk]
        out[rows] = backend(experts, hidden[rows], index[rows, :kk], weights[rows, :kk])
    return out

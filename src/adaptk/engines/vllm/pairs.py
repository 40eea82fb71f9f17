"""Expert execution over the kept (token, expert) pairs only, around any experts kernel.

A policy that keeps fewer experts than the layer's top-k leaves dropped slots, marked by id -1
(as vLLM's GPU kernels skip them in ``moe_align``). vLLM's CPU experts kernel cannot take such
slots: it counts tokens per expert with no bounds check (id -1 corrupts its heap), and a slot
with weight 0 still runs its expert. So the kept pairs are flattened into one call of the
kernel with one expert per row (topk = 1) and the rows added back to their tokens: the rows
that reach the expert matmuls are exactly the kept pairs, Σ k. A call that drops nothing goes
to the kernel as it came (the native call, the same bits).

Shapes: T tokens, H hidden size, K slots per token, P kept pairs (Σ k), N experts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from adaptk.counting import count_ids

# kernel(hidden [R, H], weights [R, S] f32, ids [R, S] int32) -> [R, H]: the weighted sum of each
# row's S experts (vLLM's CPU fused experts, or a plain reference in the tests)
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

DROPPED = -1  # the id of a slot the policy did not keep


class Executed(NamedTuple):
    out: torch.Tensor  # [T, H]
    rows: torch.Tensor  # [N] int64: the rows each expert's matmuls received


def kept_pairs(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept slots of ids [T, K] (id >= 0) as (token [P] int64, slot [P] int64), token-major."""
    return (ids >= 0).nonzero(as_tuple=True)


def run_kept(kernel: Kernel, hidden: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
             num_experts: int) -> Executed:
    """hidden [T, H], weights [T, K] f32, ids [T, K] int (DROPPED where not kept) -> the experts'
    weighted sum per token [T, H] and the rows per expert [N], calling ``kernel`` once."""
    keep = ids >= 0  # [T, K]
    if bool(keep.all()):  # nothing dropped: the kernel's own call
        return Executed(kernel(hidden, weights, ids), count_ids(ids.long(), num_experts))
    token, slot = keep.nonzero(as_tuple=True)  # [P], [P]
    pair_ids = ids[token, slot].unsqueeze(1)  # [P, 1]
    pair_weights = weights[token, slot].unsqueeze(1)  # [P, 1]
    rows = kernel(hidden.index_select(0, token), pair_weights, pair_ids)  # [P, H]
    acc = torch.float32 if rows.dtype in (torch.bfloat16, torch.float16) else rows.dtype
    out = torch.zeros((hidden.shape[0], rows.shape[1]), dtype=acc, device=rows.device)  # [T, H]
    out.index_add_(0, token, rows.to(acc))
    return Executed(out.to(rows.dtype), count_ids(pair_ids.long(), num_experts))

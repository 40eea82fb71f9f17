"""Counting expert ids without a host synchronisation (a leaf: the routing core, the expert
back-ends and the bench all count with it, and none of them needs the others for it).

Shapes: any number of ids in [0, n]; id n (the sentinel of a dropped slot) is not counted.
"""

from __future__ import annotations

import torch


def count_ids(ids: torch.Tensor, n: int) -> torch.Tensor:
    """How often each of 0..n-1 occurs in ``ids`` (int64, values in [0, n]) -> [n] int64.

    A ``scatter_add`` rather than ``bincount``: the latter reads the maximum back to the host on
    accelerators, and on the CPU it is slower at these sizes (it scans for the min and max)."""
    flat = ids.reshape(-1)
    counts = torch.zeros(n + 1, dtype=torch.long, device=flat.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat))[:n]

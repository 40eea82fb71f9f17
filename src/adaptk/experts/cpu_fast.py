"""CPU pieces of the variable-K back-end: fewer passes over memory, same bits.

On CPU the work outside the matmuls is memory traffic, and every pass costs page faults on
fresh buffers. These helpers remove passes without changing the arithmetic of the back-end
being mirrored (transformers' ``eager`` for order="expert", ``grouped_mm`` for order="slot"):

- ``mlp_rows``: one expert at a time, with the calls of the mirrored back-end (``grouped_mm`` is
  itself a loop of ``mm`` over the groups on CPU; eager is ``F.linear``); the [c, 2I]
  intermediate of one expert stays small, and the down projection is written straight into
  the expert's slice of one [V, H] output (``mm(out=)``, no copy).
- ``combine_slot``: where no token keeps more than 2 slots the weighted rows are added straight
  into a [T, H] accumulator of the dtype ``sum`` accumulates in (float32 for half types):
  0 + a + b is a + b in any order, so this is bit for bit ``buf[T*K, H].view(T, K, H).sum(1)``
  without the [T·K, H] buffer, the scatter and the reduction pass. Where a token keeps more,
  the order of the adds matters and torch's ``sum`` picks it, so the buffer is kept (unless the
  kernel is not exact anyway).
- ``mlp_combine`` (kernels that are not exact anyway): the two steps in one loop, each expert's
  weighted rows added into the [T, H] accumulator as soon as they are computed. A kernel with
  ``grouped`` (native) takes runs of consecutive experts in one call (``expert_runs``), up to
  its ``group_rows`` rows, so that a layer of 64 small experts is a few calls, not 64.
- ``combine_expert``: rows weighted in place and added into the hidden dtype expert by expert,
  as the eager loop's ``index_add_`` calls do (one call per expert for half types, whose
  single-call ``index_add_`` rounds repeated tokens only once).

In-place and ``out=`` shortcuts are taken only where autograd records nothing.
Shapes: T tokens, K slots, V kept slots (rows), H hidden, I expert width.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import nn

from adaptk.experts.compat import has_post_expert_norm
from adaptk.experts.kernels import ExactMatmul, PackedKernel, no_grad_needed

_HALF = (torch.float16, torch.bfloat16)


def activate(experts: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The module's own gate (gate+up in any layout) or activation: [c, 2I] (or [c, I]) -> [c, I]."""
    return experts._apply_gate(h) if experts.has_gate else experts.act_fn(h)


def expert_mlp(experts: nn.Module, kernel: ExactMatmul | PackedKernel, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert ``e``'s up projection, gate and down projection (biases included): x [c, H] -> [c, H_out]."""
    return kernel(False, e, activate(experts, kernel(True, e, x)))


def expert_runs(counts: list[int], group_rows: int) -> Iterator[tuple[int, int, int, int]]:
    """(first expert, end expert, first row, end row) of runs of consecutive experts, each closed
    as soon as it holds ``group_rows`` rows (1: every expert with rows alone). A run starts and
    ends at an expert with rows; experts with none inside a run cost nothing."""
    first, start, pos, last = -1, 0, 0, -1
    for e, c in enumerate(counts):
        if c == 0:
            continue
        if first < 0:
            first, start = e, pos
        pos, last = pos + c, e
        if pos - start >= group_rows:
            yield first, e + 1, start, pos
            first = -1
    if first >= 0:
        yield first, last + 1, start, pos


def run_mlp(experts: nn.Module, kernel: PackedKernel, first: int, end: int, starts: torch.Tensor,
            x: torch.Tensor) -> torch.Tensor:
    """The MLP of experts [first, end) on their rows x [c, H] (``starts`` int64 [N+1]: where each
    expert's rows begin, over all experts) -> [c, H_out], biases included: one ``grouped`` call
    per projection for a kernel that has it, else one expert (a run of one) per call."""
    grouped = getattr(kernel, "grouped", None)
    if grouped is None:
        return expert_mlp(experts, kernel, first, x)
    run = starts[first:end + 1]  # [G+1]
    return grouped(False, first, run, activate(experts, grouped(True, first, run, x)))


def mlp_rows(experts: nn.Module, x: torch.Tensor, counts: list[int], order: str,
             kernel: ExactMatmul | None = None) -> torch.Tensor:
    """x [V, H] grouped by expert (``counts[e]`` rows each, experts in order) -> [V, H_out].

    One expert at a time: the [c, 2I] intermediate of one expert stays small (and in cache)
    instead of a [V, 2I] one for all experts. ``kernel`` is the mirrored back-end's own calls
    (grouped_mm's CPU loop of ``mm``, or eager's ``F.linear``); the non-exact kernels go through
    ``mlp_combine`` instead."""
    kernel = kernel if kernel is not None else ExactMatmul(experts, order)
    up = "gate_up_proj" if experts.has_gate else "up_proj"
    w_up, w_down = getattr(experts, up), experts.down_proj
    has_down_bias = experts.has_bias and experts.down_proj_bias is not None
    transposed, norm = experts.is_transposed, has_post_expert_norm(experts)
    h_out = w_down.shape[2] if transposed else w_down.shape[1]
    dtype = w_down.dtype if order == "slot" else torch.promote_types(x.dtype, w_down.dtype)
    out = torch.empty(x.shape[0], h_out, dtype=dtype, device=x.device)  # [V, H]: every row written
    direct = not has_down_bias and not norm and no_grad_needed(x, w_up, w_down)
    start = 0
    for e, c in enumerate(counts):
        if c == 0:
            continue
        end = start + c
        h = activate(experts, kernel(True, e, x[start:end]))  # [c, I]
        if direct and (h.dtype == out.dtype or order == "slot"):
            kernel(False, e, h, out=out[start:end])  # written in place
        else:
            y = kernel(False, e, h)
            out[start:end] = experts.post_expert_norm(y) if norm else y
        start = end
    return out


def _weighted(out: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """out [V, H] * w [V] with the native back-ends' promotion; in place when it may be."""
    if out.dtype == torch.promote_types(out.dtype, w.dtype) and no_grad_needed(out, w):
        return out.mul_(w.unsqueeze(-1))
    return out * w.unsqueeze(-1)


def combine_slot(out: torch.Tensor, w: torch.Tensor, token: torch.Tensor, slot: torch.Tensor,
                 num_tokens: int, num_slots: int, hidden_dtype: torch.dtype, max_kept: int) -> torch.Tensor:
    """Σ over slots of out[V, H] · w[V] per token -> [T, H] in ``hidden_dtype``, bit for bit
    what grouped_mm's ``view(T, K, H).sum(1)`` gives with dropped slots at zero.

    ``max_kept``: the most slots any token keeps. With at most 2, 0 + a + b is a + b in any
    order, so the rows are added straight into a [T, H] accumulator; otherwise the [T·K, H]
    buffer and torch's own reduction order over K are kept (pass ``max_kept=1`` when the order
    of the adds may change, as for the non-exact kernels)."""
    weighted = _weighted(out, w)  # [V, H]
    if max_kept > 2:  # the reduction order of sum() over K is torch's own: reproduce it
        buf = weighted.new_zeros(num_tokens * num_slots, weighted.shape[-1])  # [T*K, H]
        buf[token * num_slots + slot] = weighted
        return buf.view(num_tokens, num_slots, -1).sum(dim=1).to(hidden_dtype)
    # rounded once from float32 for half types, as sum() accumulates
    acc_dtype = torch.float32 if weighted.dtype in _HALF else weighted.dtype
    acc = torch.zeros(num_tokens, weighted.shape[-1], dtype=acc_dtype, device=out.device)  # [T, H]
    acc.index_add_(0, token, weighted.to(acc_dtype))
    return acc.to(weighted.dtype).to(hidden_dtype)


def mlp_combine(experts: nn.Module, hidden: torch.Tensor, token: torch.Tensor, w: torch.Tensor,
                counts: list[int], kernel: ExactMatmul | PackedKernel) -> torch.Tensor:
    """For kernels that are not exact anyway: each expert's weighted rows added straight into a
    [T, H] accumulator (float32 for half types), with no [V, H] output buffer and no copy of the
    kernel's result into one. hidden [T, H], token/w [V] grouped by expert -> [T, H] in the
    hidden dtype."""
    acc_dtype = torch.float32 if hidden.dtype in _HALF else hidden.dtype
    acc = torch.zeros(hidden.shape[0], hidden.shape[1], dtype=acc_dtype, device=hidden.device)  # [T, H]
    norm = has_post_expert_norm(experts)
    starts = row_starts(counts)
    for first, end, r0, r1 in expert_runs(counts, kernel.group_rows):
        rows = token[r0:r1]  # [c]
        y = run_mlp(experts, kernel, first, end, starts, hidden.index_select(0, rows))  # [c, H], bias included
        y = experts.post_expert_norm(y) if norm else y
        acc.index_add_(0, rows, _weighted(y, w[r0:r1]).to(acc_dtype))
    return acc.to(hidden.dtype)


def row_starts(counts: list[int]) -> torch.Tensor:
    """int64 [N+1]: the first row of each expert's group, then the row count."""
    return torch.tensor([0, *itertools.accumulate(counts)], dtype=torch.int64)


def combine_expert(out: torch.Tensor, w: torch.Tensor, token: torch.Tensor, counts: list[int],
                   hidden: torch.Tensor) -> torch.Tensor:
    """As the eager loop: weighted rows added into the hidden dtype in row order -> [T, H].

    One ``index_add_`` per expert where the hidden dtype is a half type: a single call with
    repeated tokens accumulates those in float32 and rounds once, the eager loop rounds after
    each expert."""
    weighted = _weighted(out, w).to(hidden.dtype)  # [V, H]
    final = torch.zeros_like(hidden)  # [T, H]
    if hidden.dtype not in _HALF:
        return final.index_add_(0, token, weighted)
    start = 0
    for c in counts:
        if c:
            final.index_add_(0, token[start:start + c], weighted[start:start + c])
        start += c
    return final

"""Variable-K experts back-end: tokens keep different numbers of experts, dropped slots cost
nothing.

Input is transformers' experts contract: hidden [T, H], top_k_index [T, K] (sentinel N marks a
dropped slot, anywhere in the row), top_k_weights [T, K]. Tokens are grouped by expert once
(a stable sort of the T·K slot ids; sentinels sort last), the matmuls see only the rows of real
experts (on CPU the sentinel rows are sliced off; on accelerators they lie past the last group
offset, which grouped_mm never reads, and are zeroed with ``where`` so no uninitialised memory
can leak), and the weighted rows go back with one scatter.

Weights in every layout transformers declares through ``use_experts_implementation``:
gate+up concatenated or interleaved (the module's own ``_apply_gate``), transposed or not,
biases, no gate (``up_proj``), post-expert norm.

Two arithmetic orders, so that keeping every slot reproduces the back-end being replaced bit
for bit:
- ``order="expert"`` mirrors transformers' eager loop: one ``F.linear`` per expert, rows in
  (slot, token) order, outputs added into the hidden dtype expert by expert;
- ``order="slot"`` mirrors ``grouped_mm``: grouped matmuls, then the K slot outputs of each
  token summed in slot order.

On CPU (``_cpu_forward``, helpers in ``cpu_fast``) experts run one at a time on contiguous row
slices with the very calls of the mirrored back-end (CPU ``grouped_mm`` is itself a loop of
``mm``), each expert's output written into its slice of one [V, H] buffer, and the weighted
rows added straight into a [T, H] accumulator: same bits, no [T·K, H] buffer. In slot order
the gate (or activation) and the post-expert norm run once over all kept rows, between the
experts' up and down projections, as grouped_mm runs them (``slot_mlp_rows``: elementwise ops
on one expert's rows are not the same bits); in expert order one expert at a time, as the
eager loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adaptk.counting import count_ids
from adaptk.errors import KernelError
from adaptk.experts.compat import post_expert_norm
from adaptk.experts.cpu_fast import activate, combine_expert, combine_slot, mlp_combine, mlp_rows
from adaptk.experts.kernels import ExactMatmul, PackedKernel, no_grad_needed

ORDERS = ("expert", "slot")
_HAS_GROUPED_MM = hasattr(F, "grouped_mm")


class GroupedRows:
    """The slots of one layer call, grouped by expert. S = T·K slots, V = kept slots."""

    def __init__(self, top_k_index: torch.Tensor, num_experts: int, order: str,
                 sync_free: bool | None = None) -> None:
        t, k = top_k_index.shape
        top_k_index = top_k_index.clamp_max(num_experts)  # any id >= N is a sentinel (as expert parallelism)
        if order == "expert":  # eager: rows of an expert in (slot, token) order
            ids = top_k_index.t().reshape(-1)  # [S] position p = slot*T + token
            ids_sorted, perm = torch.sort(ids, stable=True)  # [S], sentinel N last
            token, slot = perm % t, perm // t
        else:  # grouped_mm: the same sort of the token-major slot ids
            ids = top_k_index.reshape(-1)  # [S] position p = token*K + slot
            ids_sorted, perm = torch.sort(ids)
            token, slot = perm // k, perm % k
        self.counts = count_ids(ids, num_experts)  # [N] rows each expert's matmuls receive, no host sync
        self.offsets = self.counts.cumsum(0).to(torch.int32)  # [N] group ends
        self.num_tokens, self.num_slots = t, k
        if sync_free is None:
            sync_free = top_k_index.device.type != "cpu"
        if not sync_free:
            n_valid = int(self.offsets[-1]) if num_experts else 0  # free on CPU
            token, slot, ids_sorted = token[:n_valid], slot[:n_valid], ids_sorted[:n_valid]
            self.valid = None
        else:  # no host sync: keep S rows, mask the sentinel tail
            self.valid = (ids_sorted < num_experts).unsqueeze(-1)  # [S, 1]
            ids_sorted = ids_sorted.clamp_max(num_experts - 1)
        self.ids = ids_sorted  # [V] expert of each row (for bias rows)
        self.token, self.slot = token, slot  # [V], [V]

    def mask(self, rows: torch.Tensor) -> torch.Tensor:
        """Zero rows past the last group (accelerator path); identity on CPU."""
        if self.valid is None:
            return rows
        return torch.where(self.valid, rows, torch.zeros((), dtype=rows.dtype, device=rows.device))


def _weight(experts: nn.Module, up: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    if up:
        name = "gate_up_proj" if experts.has_gate else "up_proj"
    else:
        name = "down_proj"
    w = getattr(experts, name)
    b = getattr(experts, name + "_bias") if experts.has_bias else None
    return w, b


def _grouped_linear(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, rows: GroupedRows, transposed: bool
) -> torch.Tensor:
    """x [V, in] grouped by expert -> [V, out]; w [E, out, in] (or [E, in, out] if transposed)."""
    wt = w if transposed else w.transpose(-2, -1)  # [E, in, out]
    use_kernel = _HAS_GROUPED_MM and (
        x.device.type != "cuda" or torch.cuda.get_device_capability(x.device) >= (8, 0)
    )
    if use_kernel:
        out = F.grouped_mm(x.to(wt.dtype), wt, offs=rows.offsets)
    else:  # one host sync, as in transformers' own fallback
        out = torch.zeros(x.shape[0], wt.shape[-1], dtype=wt.dtype, device=x.device)
        start = 0
        for e, end in enumerate(rows.offsets.tolist()):
            if end > start:
                torch.mm(x[start:end].to(wt.dtype), wt[e], out=out[start:end])
            start = end
    if b is not None:
        out.add_(b[rows.ids])
    return rows.mask(out)


def _expert_mlp_grouped(experts: nn.Module, x: torch.Tensor, rows: GroupedRows) -> torch.Tensor:
    """Grouped matmuls over all experts at once, as transformers' grouped_mm. [V, H] -> [V, H]."""
    w, b = _weight(experts, up=True)
    h = _grouped_linear(x, w, b, rows, experts.is_transposed)
    h = activate(experts, h)
    w, b = _weight(experts, up=False)
    out = _grouped_linear(h, w, b, rows, experts.is_transposed)
    return post_expert_norm(experts, out)


def variable_k_experts_forward(
    experts: nn.Module,
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    *,
    order: str = "slot",
    count_rows: Callable[[torch.Tensor], Any] | None = None,
    sync_free: bool | None = None,
    kernel: ExactMatmul | PackedKernel | None = None,
) -> torch.Tensor:
    """hidden [T, H], index [T, K] (sentinel N = dropped), weights [T, K] -> [T, H].

    ``count_rows``, if given, is called with the rows each expert's matmuls received, [N] int64
    on the layer's device (no host sync; ``LayerStats.add_rows``, or a counter's ``add_``).
    ``sync_free`` picks the accelerator path (sentinel rows kept past the last group and zeroed,
    no host sync); by default it is used off the CPU. ``kernel`` (CPU path only;
    ``adaptk.experts.kernels.kernel_for``) multiplies each expert's rows; by default the mirrored
    back-end's own calls.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    t, k = top_k_index.shape
    if t == 0 or k == 0:
        return torch.zeros_like(hidden_states)
    n = experts.num_experts
    rows = GroupedRows(top_k_index, n, order, sync_free)
    if count_rows is not None:
        count_rows(rows.counts)
    if rows.valid is None:  # CPU: kept rows only, fewer passes over memory, same bits
        return _cpu_forward(experts, hidden_states, top_k_weights, rows, order, kernel)
    if kernel is not None and not kernel.exact:
        raise KernelError("a non-exact kernel runs only on the CPU path (sync_free=False, CPU tensors)")
    x = rows.mask(hidden_states[rows.token])  # [V, H]
    if order == "expert":  # one expert at a time, as the eager loop (one host sync, as it)
        out = mlp_rows(experts, x, rows.counts.tolist(), order)  # rows past the last group unwritten
    else:
        out = _expert_mlp_grouped(experts, x, rows)
    out = rows.mask(out)  # [V, H]
    w = top_k_weights[rows.token, rows.slot]  # [V]
    # [V, H], promoted as the native back-ends promote; sentinel rows zeroed after the product, so
    # a NaN weight in a dropped slot cannot leak (0 * NaN = NaN)
    weighted = rows.mask(out * w.unsqueeze(-1))
    if order == "expert":
        final = torch.zeros_like(hidden_states)
        final.index_add_(0, rows.token, weighted.to(final.dtype))
        return final
    buf = weighted.new_zeros(t * k, weighted.shape[-1])  # [T*K, H] token-major, as grouped_mm
    buf[rows.token * k + rows.slot] = weighted
    return buf.view(t, k, -1).sum(dim=1).to(hidden_states.dtype)


def _cpu_forward(experts: nn.Module, hidden_states: torch.Tensor, top_k_weights: torch.Tensor,
                 rows: GroupedRows, order: str, kernel: ExactMatmul | PackedKernel | None) -> torch.Tensor:
    """CPU: rows [V] hold kept slots only (sentinels sliced off). -> [T, H]."""
    w = top_k_weights[rows.token, rows.slot]  # [V]
    counts = rows.counts.tolist()  # [N] host ints, free on CPU
    if kernel is not None and not kernel.exact:  # any order of the adds will do
        return mlp_combine(experts, hidden_states, rows.token, w, counts, kernel)
    x = hidden_states[rows.token]  # [V, H] grouped by expert
    if order == "slot":
        out = slot_mlp_rows(experts, x, counts, kernel)  # [V, H]
        if rows.num_slots <= 2:
            max_kept = 1  # any order of the adds will do
        else:  # host read, free on CPU: the most slots one token keeps
            max_kept = int(count_ids(rows.token, rows.num_tokens).max())
        return combine_slot(out, w, rows.token, rows.slot, rows.num_tokens, rows.num_slots,
                            hidden_states.dtype, max_kept)
    out = mlp_rows(experts, x, counts, order, kernel)  # [V, H]
    return combine_expert(out, w, rows.token, counts, hidden_states)


def _projected(kernel: ExactMatmul, up: bool, x: torch.Tensor, counts: list[int], width: int,
               dtype: torch.dtype) -> torch.Tensor:
    """One projection of every expert's rows, x [V, in] grouped by expert -> [V, width] in
    ``dtype``, with the kernel's calls expert by expert (written in place where autograd records
    nothing)."""
    in_place = isinstance(kernel, ExactMatmul) and no_grad_needed(x, *_weight(kernel.experts, up))
    out = torch.empty(x.shape[0], width, dtype=dtype, device=x.device) if in_place else None
    parts, start = [], 0
    for e, c in enumerate(counts):
        if c == 0:
            continue
        end = start + c
        if out is not None:
            kernel(up, e, x[start:end], out=out[start:end])  # bias added in place
        else:
            parts.append(kernel(up, e, x[start:end]))
        start = end
    if out is not None:
        return out
    return torch.cat(parts) if parts else x.new_empty(0, width, dtype=dtype)


def slot_mlp_rows(experts: nn.Module, x: torch.Tensor, counts: list[int],
                  kernel: ExactMatmul | None = None) -> torch.Tensor:
    """order="slot" on the CPU: x [V, H] grouped by expert (``counts[e]`` rows each) -> [V, H_out],
    in grouped_mm's order of operations: the up projection of every expert, then the gate (or
    activation) over all V rows at once, then the down projection of every expert, then the
    post-expert norm over all rows. The gate and the norm must see the whole [V, ·] tensor as
    transformers' grouped_mm back-end does: their transcendental functions (sigmoid, exp,
    rsqrt) round differently in torch's vectorised loop than in its scalar tail, and which
    elements fall in the tail (and where the threads split the work) depends on the tensor's
    size, so one call per expert is not the same bits (GPT-OSS's interleaved gate; any family
    once the work is split between threads). The matmuls are the mirrored back-end's own calls
    (CPU grouped_mm is a loop of ``mm``)."""
    kernel = kernel if kernel is not None else ExactMatmul(experts, "slot")
    transposed = experts.is_transposed
    w_up, w_down = _weight(experts, up=True)[0], _weight(experts, up=False)[0]
    up_width = w_up.shape[2] if transposed else w_up.shape[1]
    h_out = w_down.shape[2] if transposed else w_down.shape[1]
    h = activate(experts, _projected(kernel, True, x, counts, up_width, w_up.dtype))  # [V, I]
    out = _projected(kernel, False, h, counts, h_out, w_down.dtype)  # [V, H]
    return experts.post_expert_norm(out) if getattr(experts, "has_post_expert_norm", False) else out


def bind(experts: nn.Module, order: str, count_rows: Callable[[torch.Tensor], Any] | None,
         kernel: ExactMatmul | PackedKernel | None = None) -> Callable[..., torch.Tensor]:
    """A forward for one experts module instance (what ``adaptk.patch`` installs)."""

    def forward(hidden_states, top_k_index, top_k_weights, *args, **kwargs):
        return variable_k_experts_forward(
            experts, hidden_states, top_k_index, top_k_weights, order=order, count_rows=count_rows,
            kernel=kernel,
        )

    return forward


def adaptk_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    """Entry registered in transformers' ExpertsInterface as "adaptk" (slot order, no counting)."""
    return variable_k_experts_forward(self, hidden_states, top_k_index, top_k_weights, order="slot")


def register_with_transformers() -> None:
    """Make ``experts_implementation="adaptk"`` selectable in ``from_pretrained``."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS.register("adaptk", adaptk_experts_forward)

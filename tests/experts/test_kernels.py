"""The oneDNN and native matmul kernels against the exact back-end: same rows, outputs within a stated
tolerance (another summation order), over layouts, dtypes and k mixes; and the errors that keep
them from running where they cannot."""

import pytest
import torch
from doc_scripts import run_doc_script
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import tiny_model
from torch.overrides import TorchFunctionMode

import adaptk
from adaptk.errors import KernelError
from adaptk.experts.gemm import PackedExperts
from adaptk.experts.kernels import KERNELS, PAD_ROWS, kernel_for, onednn_available
from adaptk.experts.variable_k import variable_k_experts_forward
from adaptk.models import find_moe_layers

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")
FAST = [k for k in KERNELS if k != "exact"]
KERNEL_DTYPES = [(k, d) for k in FAST for d in (torch.float32, torch.bfloat16)]
# fp32: another summation order, so a few float32 ulps of the row sums; bf16: a few bf16 ulps
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def _experts(family, dtype):
    return find_moe_layers(tiny_model(family).to(dtype))[0].experts


def _routing(t, n, k, seed, drop, only=None):
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(t)])
    if only is not None:
        index[:, 0] = only
    weights = torch.rand(t, k, generator=g)
    dropped = (torch.rand(t, k, generator=g) < drop) & (torch.arange(k) > 0)
    index = torch.where(dropped, n, index)
    return index, torch.where(index == n, 0.0, weights)


@settings(max_examples=30, deadline=None)
@given(
    family=st.sampled_from(["mixtral", "gpt_oss", "olmoe", "qwen2_moe"]),
    kernel_dtype=st.sampled_from(KERNEL_DTYPES),
    t=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    drop=st.sampled_from([0.0, 0.5, 1.0]),
    one_expert=st.booleans(),
    order=st.sampled_from(["slot", "expert"]),
    group_rows=st.sampled_from([1, 3, 256]),
)
def test_fast_kernels_match_the_exact_back_end(family, kernel_dtype, t, seed, drop, one_expert, order, group_rows):
    """``group_rows``: for a kernel that runs experts in groups (native), every expert alone,
    runs of a few rows, or the whole layer in one call."""
    kernel, dtype = kernel_dtype
    experts = _experts(family, dtype)
    n = experts.num_experts
    k = min(2, n)
    index, weights = _routing(t, n, k, seed, drop, only=0 if one_expert else None)
    x = torch.randn(t, experts.down_proj.shape[1 if not experts.is_transposed else 2],
                    generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    matmul = kernel_for(experts, kernel, order)
    if hasattr(matmul, "grouped"):
        matmul.group_rows = group_rows
    with torch.inference_mode():
        ref = variable_k_experts_forward(experts, x, index, weights.to(dtype), order=order)
        got = variable_k_experts_forward(experts, x, index, weights.to(dtype), order=order, kernel=matmul)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    torch.testing.assert_close(got.float(), ref.float(), **TOL[dtype])


class _RowSpy(TorchFunctionMode):
    """Rows multiplied by gate-up expert weights through oneDNN (plain or packed) or the native
    kernel: all of them, and those that are not zero (padding rows are)."""

    def __init__(self, gate_up_rows, monkeypatch):
        super().__init__()
        self.rows, self.nonzero_rows, self.gate_up_rows = 0, 0, gate_up_rows
        native_grouped = PackedExperts.grouped_matmul

        def grouped_spy(packed, x, *args):
            self._count(x, packed.n)
            return native_grouped(packed, x, *args)

        monkeypatch.setattr(PackedExperts, "grouped_matmul", grouped_spy)

    def _count(self, x, out_features):
        if out_features == self.gate_up_rows:
            self.rows += x.shape[0]
            self.nonzero_rows += int((x != 0).any(dim=-1).sum())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if "linear_pointwise" in str(func):
            self._count(args[0], out.shape[-1])
        return out


@pytest.mark.parametrize("kernel", FAST)
def test_fast_kernels_multiply_only_kept_rows(kernel, monkeypatch):
    experts = _experts("mixtral", torch.float32)
    n = experts.num_experts
    index, weights = _routing(20, n, 2, seed=3, drop=0.5)
    x = torch.randn(20, experts.down_proj.shape[1])
    matmul = kernel_for(experts, kernel, "slot")
    with torch.inference_mode(), _RowSpy(experts.gate_up_proj.shape[1], monkeypatch) as spy:
        variable_k_experts_forward(experts, x, index, weights, kernel=matmul)
    counts = torch.bincount(index[index < n], minlength=n).tolist()
    assert any(0 < c < PAD_ROWS for c in counts) and any(c >= PAD_ROWS for c in counts)
    padded = [PAD_ROWS if kernel == "onednn-packed" and 0 < c < PAD_ROWS else c for c in counts]
    assert spy.nonzero_rows == sum(counts) == int((index < n).sum()) > 0  # dropped slots: never
    assert spy.rows == sum(padded)  # and the only other rows are the packed kernel's zero padding


def test_patch_with_fast_kernels_matches_exact_logits():
    model = tiny_model("mixtral")
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    policy = adaptk.EntropyThreshold([1, 2], [1.7])
    with torch.inference_mode():
        with adaptk.patch(model, policy) as handle:
            ref = model(ids).logits
            ref_k = handle.stats().average_k
        for kernel in FAST:
            with adaptk.patch(model, policy, kernel=kernel) as handle:
                got = model(ids).logits
                assert handle.stats().average_k == ref_k
            torch.testing.assert_close(got, ref, **TOL[torch.float32])


@pytest.mark.parametrize("kernel", ["onednn-packed", "native"])
def test_packed_weights_follow_weight_changes(kernel):
    """Weights changed in place (load_state_dict, optimizer steps) are re-packed, not stale."""
    experts = _experts("mixtral", torch.float32)
    n = experts.num_experts
    index, weights = _routing(6 * n, n, 2, seed=5, drop=0.0)
    x = torch.randn(index.shape[0], experts.down_proj.shape[1])
    matmul = kernel_for(experts, kernel, "slot")
    with torch.inference_mode():
        before = variable_k_experts_forward(experts, x, index, weights, kernel=matmul)
    with torch.no_grad():
        experts.gate_up_proj.mul_(2.0)
    with torch.inference_mode():
        after = variable_k_experts_forward(experts, x, index, weights, kernel=matmul)
        ref = variable_k_experts_forward(experts, x, index, weights)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, ref, **TOL[torch.float32])


def test_kernel_errors_say_what_to_do():
    experts = _experts("mixtral", torch.float32)
    with pytest.raises(KernelError, match="unknown kernel"):
        kernel_for(experts, "fastest", "slot")
    with pytest.raises(KernelError, match="float32 and bfloat16"):
        kernel_for(_experts("mixtral", torch.float16), "onednn", "slot")
    with pytest.raises(KernelError, match="kernel='exact'"):
        adaptk.patch(tiny_model("mixtral").half(), adaptk.FixedTopK(2), kernel="onednn-packed")
    with pytest.raises(KernelError, match="kernel 'native' supports float32 and bfloat16"):
        kernel_for(_experts("mixtral", torch.float16), "native", "slot")
    # inference only: under autograd the kernel refuses instead of switching arithmetic
    x = torch.randn(4, experts.down_proj.shape[1], requires_grad=True)
    index, weights = _routing(4, experts.num_experts, 2, seed=0, drop=0.0)
    for name in FAST:
        with pytest.raises(KernelError, match="inference"):
            variable_k_experts_forward(experts, x, index, weights, kernel=kernel_for(experts, name, "slot"))
    with pytest.raises(KernelError, match="CPU path"):
        variable_k_experts_forward(experts, x.detach(), index, weights, sync_free=True,
                                   kernel=kernel_for(experts, "onednn", "slot"))


def test_a_new_patch_reuses_live_packed_weights_and_frees_them_with_the_handle():
    import gc
    import weakref

    model = tiny_model("mixtral")
    policy = adaptk.FixedTopK(2)
    with adaptk.patch(model, policy, kernel="onednn-packed") as first:
        kernels = first.kernels
    with adaptk.patch(model, policy, kernel="onednn-packed") as second:
        assert all(a is b for a, b in zip(kernels, second.kernels))  # not packed again
    gone = weakref.ref(kernels[0])
    del kernels, first, second
    gc.collect()
    assert gone() is None  # nothing in adaptk keeps the packed copy alive


@pytest.mark.skipif(not onednn_available(), reason="needs oneDNN")
def test_rows_script_prints_a_table(capsys, monkeypatch):
    """docs/scripts/kernel_rows.py (the per-row timings behind the packing and padding) runs."""
    out = run_doc_script("kernel_rows.py", ["--hidden", "16", "--width", "8", "--experts", "2", "--rows", "1,5",
                                            "--repeats", "1"], monkeypatch, capsys)
    from adaptk.experts import gemm

    extra = " native |" if gemm.unavailable() is None else ""
    assert out[1] == "| rows | mkl | onednn | packed | packed, padded to 4 |" + extra
    assert [line.split(" | ")[0] for line in out[3:]] == ["| 1", "| 5"]

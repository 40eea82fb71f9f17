"""patch() on a tiny model of every supported family: exactness, undo, counting, references."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import ODD_WIDTH, TINY, regimes_for, reweight, tiny_model

import adaptk
from adaptk.models import find_moe_layers

FAMILIES = sorted(TINY)
IMPLS = ["eager", None]  # None: transformers' default back-end (grouped_mm)


def _ids(seed=0, shape=(2, 12)):
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("impl", IMPLS, ids=["eager", "default"])
@pytest.mark.parametrize("family", FAMILIES)
def test_native_k_is_bit_identical_and_unpatch_restores(family, impl):
    model = tiny_model(family, experts_implementation=impl)
    ids = _ids()
    with torch.no_grad():
        ref = model(ids).logits
        k = find_moe_layers(model)[0].native_k
        handle = adaptk.patch(model, adaptk.FixedTopK(k))
        out = model(ids).logits
        report = handle.stats()
        handle.unpatch()
        after = model(ids).logits
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(after, ref, rtol=0, atol=0)
    assert report.compute_fraction == 1.0
    assert all(r.tokens == ids.numel() for r in report.layers)
    # nothing of the patch is left on any module
    for name, module in model.named_modules():
        assert "forward" not in module.__dict__, name


@pytest.mark.parametrize("family", FAMILIES)
def test_counted_rows_equal_sum_of_k(family):
    model = tiny_model(family)
    layers = find_moe_layers(model)
    native = layers[0].native_k
    policy = adaptk.EntropyThreshold.from_fractions(
        [1, native] if native > 1 else [1, 2], [0.85], layers[0].num_experts
    )
    ids = _ids(1)
    with torch.no_grad(), adaptk.patch(model, policy) as handle:
        model(ids)
        report = handle.stats()
    for r in report.layers:
        assert r.tokens == ids.numel()
        assert sum(r.k_histogram) == r.tokens
        sum_k = sum(k * c for k, c in enumerate(r.k_histogram))
        assert r.executed_pairs == sum_k  # rows inside the matmuls == Σk
        assert sum(r.expert_counts) == sum_k


def test_tiny_mixtral_compute_fraction_below_one_matches_counted_rows():
    model = tiny_model("mixtral")
    with torch.no_grad(), adaptk.patch(model, adaptk.EntropyThreshold([1, 2], [1.6])) as handle:
        model(_ids(2))
        report = handle.stats()
    assert 0 < report.compute_fraction < 1
    assert report.executed_pairs == sum(
        sum(k * c for k, c in enumerate(r.k_histogram)) for r in report.layers
    )
    assert report.compute_fraction == pytest.approx(report.average_k / 2)


def _reference_top1(block, router_attr, x, family):
    """Hand-written top-1 MoE: the best expert by the model's ranking, its MLP, its weight."""
    router = getattr(block, router_attr)
    experts = block.experts
    h = x.reshape(-1, x.shape[-1])
    bias = getattr(router, "bias", None)
    logits = F.linear(h, router.weight, bias if isinstance(bias, torch.Tensor) else None).float()
    probs = logits.softmax(-1)
    top = probs.argmax(-1)
    out = torch.zeros_like(h)
    for t in range(h.shape[0]):
        e = int(top[t])
        if experts.is_transposed:
            gu = h[t] @ experts.gate_up_proj[e] + experts.gate_up_proj_bias[e]
            y = experts._apply_gate(gu.unsqueeze(0))[0] @ experts.down_proj[e] + experts.down_proj_bias[e]
        else:
            gate, up = (experts.gate_up_proj[e] @ h[t]).chunk(2)
            y = experts.down_proj[e] @ (experts.act_fn(gate) * up)
        # weight of a single kept expert: 1 where the model renormalises over the kept ones,
        # the raw probability where it does not
        renorm = family in ("mixtral", "gpt_oss", "granitemoe") or getattr(router, "norm_topk_prob", False)
        w = 1.0 if renorm else probs[t, e]
        out[t] = w * y
    return out.reshape(x.shape)


@pytest.mark.parametrize("family", ["mixtral", "olmoe", "qwen3_moe", "gpt_oss", "granitemoe", "jamba"])
def test_k1_layer_equals_hand_written_top1(family):
    model = tiny_model(family)
    layer = find_moe_layers(model)[0]
    x = torch.randn(2, 5, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = _reference_top1(layer.block, layer.family.router_attr, x, family)
        with adaptk.patch(model, adaptk.FixedTopK(1)):
            out = layer.block(x)
            out = out[0] if isinstance(out, tuple) else out
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_only_the_instance_handed_in_is_changed():
    a, b = tiny_model("mixtral"), tiny_model("mixtral")
    ids = _ids()
    with torch.no_grad():
        ref_b = b(ids).logits
        with adaptk.patch(a, adaptk.FixedTopK(1)):
            torch.testing.assert_close(b(ids).logits, ref_b, rtol=0, atol=0)
            assert not torch.equal(a(ids).logits, ref_b)


def test_patch_twice_and_unpatch_twice_are_errors():
    model = tiny_model("mixtral")
    handle = adaptk.patch(model, adaptk.FixedTopK(2))
    with pytest.raises(adaptk.PatchError, match="already patched"):
        adaptk.patch(model, adaptk.FixedTopK(1))
    handle.unpatch()
    with pytest.raises(adaptk.PatchError, match="not in place"):
        handle.unpatch()


def test_reset_stats():
    model = tiny_model("mixtral")
    with torch.no_grad(), adaptk.patch(model, adaptk.FixedTopK(2)) as handle:
        model(_ids())
        handle.reset_stats()
        assert handle.stats().tokens == 0 and handle.stats().executed_pairs == 0
        model(_ids(shape=(1, 3)))
        report = handle.stats()
        # every counter starts again, the experts' executed rows too (they count into the same tensor)
        assert report.tokens == 3 and report.native_pairs == report.executed_pairs == 3 * 2 * len(report.layers)
        assert all(sum(layer.expert_counts) == 3 * 2 for layer in report.layers)


def test_generate_runs_patched():
    model = tiny_model("qwen2_moe")
    with torch.no_grad(), adaptk.patch(model, adaptk.TopP(0.5)) as handle:
        out = model.generate(_ids(shape=(1, 4)), max_new_tokens=3, do_sample=False)
        report = handle.stats()
    assert out.shape == (1, 7)
    assert report.tokens == 4 + 2  # prefill + two single-token decode steps


@pytest.mark.parametrize("family", FAMILIES)
def test_native_k_is_bit_identical_in_bfloat16(family):
    model = tiny_model(family).to(torch.bfloat16)
    ids = _ids(4)
    with torch.no_grad():
        ref = model(ids).logits
        k = find_moe_layers(model)[0].native_k
        with adaptk.patch(model, adaptk.FixedTopK(k)):
            out = model(ids).logits
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def _regime_cases():
    for family in FAMILIES:
        for regime in regimes_for(family):
            for width in ("tiny", "odd"):
                yield pytest.param(family, regime, width, id=f"{family}-{regime}-{width}")


@pytest.mark.parametrize("impl", IMPLS, ids=["eager", "default"])
@pytest.mark.parametrize(("family", "regime", "width"), list(_regime_cases()))
def test_native_k_is_bit_identical_in_every_weight_regime(family, regime, width, impl):
    """FixedTopK(native k) gives the unpatched logits bit for bit whatever the weights: transformers'
    init, every parameter N(0, 0.2), near one-hot routers, large router biases; at the tiny widths
    and at an expert width with scalar tails in torch's vector loops (``ODD_WIDTH``)."""
    model = reweight(tiny_model(family, experts_implementation=impl, **(ODD_WIDTH if width == "odd" else {})),
                     family, regime)
    ids = _ids(7, shape=(2, 24))
    with torch.no_grad():
        ref = model(ids).logits
        assert torch.isfinite(ref).all()
        k = find_moe_layers(model)[0].native_k
        with adaptk.patch(model, adaptk.FixedTopK(k)):
            out = model(ids).logits
    assert torch.equal(out, ref), f"max |diff| {(out - ref).abs().max().item():.3g}"


@pytest.mark.parametrize("family", FAMILIES)
def test_native_k_is_bit_identical_with_the_work_split_between_threads(family):
    """Two intra-op threads and experts wide enough that torch splits an elementwise op's work
    between them (more than its 32768-element grain): where the split falls depends on the
    tensor's size, so the gate must run on all rows at once as grouped_mm runs it."""
    model = reweight(tiny_model(family, intermediate_size=3000, moe_intermediate_size=3000), family, "normal")
    ids = _ids(8, shape=(2, 24))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            ref = model(ids).logits
            k = find_moe_layers(model)[0].native_k
            with adaptk.patch(model, adaptk.FixedTopK(k)):
                out = model(ids).logits
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out, ref), f"max |diff| {(out - ref).abs().max().item():.3g}"


@pytest.mark.parametrize(("family", "regime"), [(f, r) for f in FAMILIES for r in regimes_for(f) if r != "default"])
def test_native_k_is_bit_identical_in_bfloat16_in_every_weight_regime(family, regime):
    model = reweight(tiny_model(family, **ODD_WIDTH), family, regime).to(torch.bfloat16)
    ids = _ids(9, shape=(2, 24))
    with torch.no_grad():
        ref = model(ids).logits
        k = find_moe_layers(model)[0].native_k
        with adaptk.patch(model, adaptk.FixedTopK(k)):
            out = model(ids).logits
    assert torch.equal(out, ref), f"max |diff| {(out.float() - ref.float()).abs().max().item():.3g}"

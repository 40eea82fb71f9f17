"""Bad input gets a specific exception that says what to fix."""

import pytest
import torch
from tiny_models import tiny_model
from torch import nn

import adaptk
from adaptk.models import find_moe_layers


def test_nan_logits_are_rejected():
    model = tiny_model("mixtral")
    layer = find_moe_layers(model)[0]
    with torch.no_grad():
        layer.router.weight[0, 0] = float("nan")
    with adaptk.patch(model, adaptk.FixedTopK(2)), pytest.raises(adaptk.RoutingInputError, match="NaN or Inf"):
        model(torch.ones(1, 4, dtype=torch.long))


def test_inf_logits_counted_in_deferred_mode():
    model = tiny_model("mixtral")
    layer = find_moe_layers(model)[0]
    with torch.no_grad():
        layer.router.weight[0] = float("inf")
    with torch.no_grad(), adaptk.patch(model, adaptk.FixedTopK(2), check_finite="deferred") as h:
        model(torch.ones(1, 4, dtype=torch.long))
        assert h.stats().layers[0].nonfinite_tokens == 4


def test_zero_tokens_route_to_empty():
    model = tiny_model("olmoe")
    layer = find_moe_layers(model)[0]
    with torch.no_grad(), adaptk.patch(model, adaptk.EntropyThreshold([4, 8], [2.0])) as h:
        out = layer.block(torch.zeros(1, 0, model.config.hidden_size))
        assert out.shape == (1, 0, model.config.hidden_size)
        assert h.stats().layers[0].tokens == 0


def test_policy_wider_than_model():
    model = tiny_model("mixtral")  # 8 experts
    with pytest.raises(adaptk.PolicyError, match="only 8"):
        adaptk.patch(model, adaptk.FixedTopK(9))


def test_per_layer_policy_with_wrong_layer_count():
    model = tiny_model("mixtral")  # 2 MoE layers
    per_layer = adaptk.EntropyThreshold([1, 2], [[1.0], [1.0], [1.0]])
    with pytest.raises(adaptk.PolicyError, match="3 MoE layers but the model has 2"):
        adaptk.patch(model, per_layer)
    with pytest.raises(adaptk.PolicyError, match="one beta per|per MoE layer"):
        adaptk.patch(model, adaptk.RatioSkip([0.1, 0.2, 0.3]))


def test_model_without_moe_names_the_families():
    with pytest.raises(adaptk.UnsupportedModelError, match="mixtral") as err:
        adaptk.patch(nn.Sequential(nn.Linear(4, 4)), adaptk.FixedTopK(1))
    assert "deepseek-v3" in str(err.value)


def test_policy_must_be_a_policy():
    with pytest.raises(TypeError, match="adaptk policy"):
        adaptk.patch(tiny_model("mixtral"), "top2")


def test_patched_layers_found_for_every_family():
    from tiny_models import TINY, unavailable

    for family in TINY:
        if unavailable(family) is None:  # refused under an older transformers (tests/models/test_min_transformers.py)
            assert find_moe_layers(tiny_model(family))


def test_patch_without_statistics_routes_the_same_and_says_so():
    import torch
    from tiny_models import tiny_model

    import adaptk
    from adaptk.errors import PatchError

    model = tiny_model("mixtral")
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    policy = adaptk.EntropyThreshold([1, 2], [1.7])
    with torch.no_grad():
        with adaptk.patch(model, policy) as handle:
            ref = model(ids).logits
        with adaptk.patch(model, policy, collect_stats=False) as handle:
            assert torch.equal(model(ids).logits, ref)
            with pytest.raises(PatchError, match="collect_stats=False"):
                handle.stats()

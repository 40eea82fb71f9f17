"""served: a vLLM prefix mapped to adaptk's MoE layer index, and the policy check of transformers."""

import pytest
import transformers
from tiny_models import COMMON, TINY

from adaptk.calibrate import PolicyFileError, make_policy_file
from adaptk.engines.vllm import served
from adaptk.errors import UnsupportedModelError
from adaptk.routing import FixedTopK


def _config(family, **extra):
    cls, kwargs = TINY[family]
    return getattr(transformers, cls)(**{**COMMON, **kwargs, **extra})


def test_decoder_layer():
    assert served.decoder_layer("model.layers.3.block_sparse_moe.experts") == 3
    assert served.decoder_layer("layers.12.mlp.experts") == 12
    with pytest.raises(UnsupportedModelError, match="decoder layer"):
        served.decoder_layer("model.moe.experts")


def test_moe_layers_are_counted_as_in_transformers():
    cfg = _config("qwen2_moe", num_hidden_layers=4, mlp_only_layers=[1], architectures=["Qwen2MoeForCausalLM"])
    layers = served.served_layers(served.meta_model(cfg))
    assert sorted(layers) == [0, 2, 3]
    assert [layers[i].index for i in (0, 2, 3)] == [0, 1, 2]
    assert {(x.num_experts, x.native_k) for x in layers.values()} == {(8, 4)}


def test_unsupported_architecture_is_refused():
    with pytest.raises(UnsupportedModelError, match="MixtralForCausalLM"):
        served.check_architecture(_config("gpt_oss", architectures=["GptOssForCausalLM"]))


def test_a_policy_file_for_another_model_is_refused():
    mixtral = served.meta_model(_config("mixtral", architectures=["MixtralForCausalLM"]))
    other = served.meta_model(_config("mixtral", num_hidden_layers=3, architectures=["MixtralForCausalLM"]))
    pf = make_policy_file(other, FixedTopK(2), {"strategy": "manual"})
    with pytest.raises(PolicyFileError, match="num_moe_layers"):
        served.check_policy_file(pf, mixtral, "ADAPTK_POLICY=x.json")
    served.check_policy_file(make_policy_file(mixtral, FixedTopK(2), {"strategy": "manual"}), mixtral, "here")

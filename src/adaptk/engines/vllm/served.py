"""The served model as adaptk's checks see it: its transformers architecture built on the meta
device from the model's config (no weights read), so that a policy file is checked against a
vLLM model by the same code as against a transformers one (``adaptk.calibrate.check_fits``).

A vLLM MoE layer is matched to adaptk's MoE layer index by its decoder layer number (the
``layers.<i>.`` of its prefix): MoE layers are counted as in transformers, also where some
decoder layers are dense or held by another pipeline stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from adaptk.calibrate import PolicyFile, check_fits
from adaptk.errors import UnsupportedModelError
from adaptk.models import find_moe_layers

# vLLM model classes whose MoE layers the plugin routes: softmax top-k routers of vLLM's CPU router
ARCHITECTURES = ("MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM")
_LAYER_NUMBER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class ServedLayer:
    index: int  # adaptk's MoE layer index (MoE layers only, in module order)
    decoder_layer: int
    num_experts: int
    native_k: int


def decoder_layer(prefix: str) -> int:
    """The decoder layer number in a module prefix ('model.layers.3.mlp.experts' -> 3)."""
    match = _LAYER_NUMBER.search(prefix)
    if match is None:
        raise UnsupportedModelError(f"adaptk cannot tell which decoder layer the MoE layer {prefix!r} is in "
                                    "(no 'layers.<i>.' in its name); this vLLM model is not supported")
    return int(match.group(1))


def check_architecture(hf_config) -> str:
    """The config's architecture, or ``UnsupportedModelError`` naming the supported ones."""
    archs = list(getattr(hf_config, "architectures", None) or [])
    arch = archs[0] if archs else type(hf_config).__name__
    if arch not in ARCHITECTURES:
        raise UnsupportedModelError(f"adaptk's vLLM plugin routes {', '.join(ARCHITECTURES)}; this model is {arch}. "
                                    "Unset ADAPTK_POLICY and ADAPTK_MONITOR to serve it without adaptk")
    return arch


def meta_model(hf_config) -> nn.Module:
    """The transformers model of ``hf_config`` on the meta device (shapes only, no memory)."""
    from transformers import AutoModelForCausalLM

    check_architecture(hf_config)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(hf_config)


def served_layers(model: nn.Module) -> dict[int, ServedLayer]:
    """Decoder layer number -> the MoE layer there, for a (meta) transformers model."""
    out = {}
    for layer in find_moe_layers(model):
        number = decoder_layer(layer.name + ".")
        out[number] = ServedLayer(layer.index, number, layer.num_experts, layer.native_k)
    return out


def check_policy_file(pf: PolicyFile, model: nn.Module, where: str) -> None:
    """``PolicyFileError`` unless ``pf`` fits the served model (adaptk's transformers check)."""
    check_fits(pf, model, where)

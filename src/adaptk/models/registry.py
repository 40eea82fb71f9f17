"""Find the MoE layers of a loaded transformers model."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptk.errors import UnsupportedModelError
from adaptk.models.families import FAMILIES
from adaptk.models.spec import MoEFamily

_BY_ROUTER_CLASS: dict[str, MoEFamily] = {c: f for f in FAMILIES for c in f.router_classes}


def register_family(family: MoEFamily) -> MoEFamily:
    """Declare a new routing convention (or more router classes for an existing one)."""
    for cls_name in family.router_classes:
        _BY_ROUTER_CLASS[cls_name] = family
    return family


def supported_router_classes() -> list[str]:
    return sorted(_BY_ROUTER_CLASS)


def supported_families() -> list[str]:
    return sorted({f.name for f in _BY_ROUTER_CLASS.values()})


@dataclass(frozen=True)
class MoELayer:
    """One MoE block of a model: ``index`` counts MoE layers only, in module order."""

    index: int
    name: str  # module path of the MoE block
    block: nn.Module
    router: nn.Module
    experts: nn.Module
    family: MoEFamily

    @property
    def num_experts(self) -> int:
        return self.family.num_experts(self.router)

    @property
    def native_k(self) -> int:
        return self.family.native_k(self.router)


def find_moe_layers(model: nn.Module) -> list[MoELayer]:
    """All MoE blocks of ``model`` whose router belongs to a known family, in module order.

    Raises ``UnsupportedModelError`` (naming the supported families) when there is none.
    """
    layers: list[MoELayer] = []
    for name, module in model.named_modules():
        for attr in ("gate", "router"):
            child = module._modules.get(attr)
            family = _BY_ROUTER_CLASS.get(type(child).__name__) if child is not None else None
            if family is None:
                continue
            experts = module._modules.get(family.experts_attr)
            if experts is None:
                continue
            layers.append(MoELayer(len(layers), name, module, child, experts, family))
    if not layers:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no MoE layer adaptk supports. Supported families: "
            f"{', '.join(supported_families())} (router classes: {', '.join(supported_router_classes())}). "
            "A family with a new router convention is one MoEFamily declaration passed to "
            "adaptk.models.register_family."
        )
    return layers

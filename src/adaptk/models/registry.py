"""Find the MoE layers of a loaded transformers model."""

from __future__ import annotations

import re
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


def release(version: str) -> tuple[int, int, int]:
    """The release numbers of a version string: '5.21' -> (5, 21, 0), '5.22.0.dev0+x' -> (5, 22, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    a, b, c = ([int(p) for p in match.group().split(".")] + [0, 0])[:3]
    return a, b, c


def family_unavailable(family: MoEFamily, installed: str | None = None) -> str | None:
    """Why ``family`` cannot be patched under the transformers ``installed`` (default: the one
    imported), or None where it can (``MoEFamily.min_transformers``)."""
    if family.min_transformers is None:
        return None
    if installed is None:
        import transformers

        installed = transformers.__version__
    if release(installed) >= release(family.min_transformers):
        return None
    return (f"adaptk supports {family.name} models from transformers {family.min_transformers} on "
            f"(the installed transformers is {installed}); upgrade: pip install "
            f"'transformers>={family.min_transformers},<6'")


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
        for attr in dict.fromkeys(f.router_attr for f in _BY_ROUTER_CLASS.values()):  # declared order
            child = module._modules.get(attr)
            family = _BY_ROUTER_CLASS.get(type(child).__name__) if child is not None else None
            if family is None or family.router_attr != attr:
                continue
            experts = module._modules.get(family.experts_attr)
            if experts is None:
                continue
            why = family_unavailable(family)
            if why is not None:  # its router would be mirrored wrong: refuse, never route it
                raise UnsupportedModelError(f"{type(model).__name__}: MoE layer {name!r} "
                                            f"({type(child).__name__}): {why}")
            layers.append(MoELayer(len(layers), name, module, child, experts, family))
    if not layers:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no MoE layer adaptk supports. Supported families: "
            f"{', '.join(supported_families())} (router classes: {', '.join(supported_router_classes())}). "
            "A family with a new router convention is one MoEFamily declaration passed to "
            "adaptk.models.register_family."
        )
    return layers

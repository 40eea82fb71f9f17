"""A family's router is looked for under the MoE block attribute it declares (``router_attr``)."""

import pytest
from torch import nn

from adaptk.errors import UnsupportedModelError
from adaptk.models import MoEFamily, find_moe_layers, registry


class GatingRouter(nn.Linear):
    pass


def _block(attr):
    block = nn.Module()
    setattr(block, attr, GatingRouter(4, 2))
    block.experts = nn.Linear(4, 4)
    return nn.ModuleDict({"moe": block})


def test_the_router_is_found_under_its_declared_attribute_only(monkeypatch):
    fam = MoEFamily("gating", ("GatingRouter",), scores=None, weights=None, router_attr="gating")
    monkeypatch.setitem(registry._BY_ROUTER_CLASS, "GatingRouter", fam)
    layers = find_moe_layers(_block("gating"))
    assert [(layer.name, layer.family.name) for layer in layers] == [("moe", "gating")]
    with pytest.raises(UnsupportedModelError):  # the same class elsewhere is not this family's router
        find_moe_layers(_block("gate"))

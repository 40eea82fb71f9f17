"""Per-family declarations of transformers MoE routing conventions and layer discovery."""

from adaptk.models.registry import (
    MoELayer,
    find_moe_layers,
    register_family,
    supported_families,
    supported_router_classes,
)
from adaptk.models.spec import FastPath, MoEFamily, RouterScores

__all__ = [
    "FastPath",
    "MoEFamily",
    "MoELayer",
    "RouterScores",
    "find_moe_layers",
    "register_family",
    "supported_families",
    "supported_router_classes",
]

"""adaptk: entropy-guided adaptive top-k routing and routing health for transformers MoE models."""

from adaptk.engines.transformers.handle import PatchHandle
from adaptk.engines.transformers.patch import patch
from adaptk.errors import (
    AdaptkError,
    KernelError,
    PatchConfigError,
    PatchError,
    PolicyError,
    RoutingInputError,
    UnsupportedModelError,
)
from adaptk.routing import EntropyThreshold, FixedTopK, Policy, RatioSkip, TopP, routing_entropy
from adaptk.routing.stats import LayerReport, PatchReport

__version__ = "0.1.0"

__all__ = [
    "AdaptkError",
    "EntropyThreshold",
    "FixedTopK",
    "KernelError",
    "LayerReport",
    "PatchConfigError",
    "PatchError",
    "PatchHandle",
    "PatchReport",
    "Policy",
    "PolicyError",
    "RatioSkip",
    "RoutingInputError",
    "TopP",
    "UnsupportedModelError",
    "patch",
    "routing_entropy",
]

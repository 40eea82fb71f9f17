"""adaptk: entropy-guided adaptive top-k routing and routing health for transformers MoE models."""

from adaptk.errors import AdaptkError, KernelError, PatchError, PolicyError, RoutingInputError, UnsupportedModelError
from adaptk.patch import PatchHandle, patch
from adaptk.routing import EntropyThreshold, FixedTopK, Policy, RatioSkip, TopP, routing_entropy
from adaptk.routing.stats import LayerReport, PatchReport

__version__ = "0.1.0"

__all__ = [
    "AdaptkError",
    "EntropyThreshold",
    "FixedTopK",
    "KernelError",
    "LayerReport",
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

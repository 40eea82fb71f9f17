"""Expert execution back-ends for variable numbers of experts per token."""

from adaptk.experts.variable_k import (
    ORDERS,
    adaptk_experts_forward,
    register_with_transformers,
    variable_k_experts_forward,
)

__all__ = ["ORDERS", "adaptk_experts_forward", "register_with_transformers", "variable_k_experts_forward"]

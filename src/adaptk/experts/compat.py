"""The transformers experts flags that some supported transformers versions predate, read once.

transformers' ``@use_experts_implementation`` sets layout flags on every experts module
(``has_gate``, ``has_bias``, ``is_transposed``, ...), and its back-ends (eager, grouped_mm,
batched_mm) branch on them. A flag added in a later transformers release is absent on modules
built by an earlier one; those releases also lack the code the flag switches on, so the value
that reproduces their arithmetic is the one that skips it. ``PREDATED`` declares each such flag
with that value and the release that added it; nothing else in adaptk guesses a default.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class Predated(NamedTuple):
    since: str  # the transformers release that added the flag
    default: bool  # what every earlier release computes as (its back-ends lack the branch)


PREDATED: dict[str, Predated] = {
    # transformers 5.20 added the optional norm after each expert (up -> gate -> down -> norm);
    # 5.0 to 5.19 never apply one (integrations/moe.py of those wheels)
    "has_post_expert_norm": Predated("5.20", False),
}


def experts_flag(experts: nn.Module, name: str) -> bool:
    """The experts module's flag ``name``; for a flag in ``PREDATED`` missing on the module (an
    older transformers built it), the value that reproduces that version's arithmetic."""
    if name in PREDATED:
        return bool(getattr(experts, name, PREDATED[name].default))
    return bool(getattr(experts, name))


def has_post_expert_norm(experts: nn.Module) -> bool:
    """Whether the native back-ends apply ``experts.post_expert_norm`` after each expert."""
    return experts_flag(experts, "has_post_expert_norm")


def post_expert_norm(experts: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``y`` [c, H] through the module's post-expert norm where it has one, else ``y`` itself."""
    return experts.post_expert_norm(y) if has_post_expert_norm(experts) else y

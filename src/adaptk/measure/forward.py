"""The forward-pass measure: what a policy actually does to a model on some tokens (a real patched run)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adaptk.engines.transformers.patch import patch
from adaptk.measure.perplexity import (
    PerplexityResult,
    WindowConfig,
    sliding_window_perplexity,
)
from adaptk.routing import Policy
from adaptk.routing.stats import PatchReport


@dataclass
class Measured:
    policy: Policy
    ppl: PerplexityResult
    report: PatchReport

    @property
    def average_k(self) -> float:
        return self.report.average_k


def measure(model: nn.Module, policy: Policy, ids: torch.Tensor, cfg: WindowConfig, *,
            keep_logprobs: bool = False, progress: bool = False, desc: str = "patched run") -> Measured:
    """Perplexity and routing counters of ``model`` patched with ``policy`` on ids [L]."""
    with patch(model, policy) as handle:
        res = sliding_window_perplexity(model, ids, cfg, keep_logprobs=keep_logprobs, progress=progress, desc=desc)
        rep = handle.stats()
    return Measured(policy, res, rep)

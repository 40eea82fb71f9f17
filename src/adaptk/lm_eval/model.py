"""``AdaptkLM``: lm-eval's Hugging Face model (``HFLM``) with the model patched by ``adaptk.patch``.

Imports lm_eval: import it through ``adaptk.lm_eval.register()`` (lm-eval then imports this module
when ``--model adaptk`` is asked for), not from ``adaptk``'s own modules.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from adaptk.assets import default_model_path
from adaptk.calibrate import load_policy_file
from adaptk.engines.transformers import ROUTING_MODES, PatchHandle
from adaptk.engines.transformers.patch import patch
from adaptk.experts.kernels import KERNELS
from adaptk.lm_eval.args import PatchArgs, model_folder, patch_args
from adaptk.routing import FixedTopK, Policy
from adaptk.routing.stats import PatchReport

log = logging.getLogger(__name__)


def summary(args: PatchArgs, policy: Policy | None, report: PatchReport | None) -> dict[str, Any]:
    """The adaptk part of lm-eval's results (``results["config"]["adaptk"]``), JSON-ready."""
    if policy is None or report is None:
        return {"patched": False}
    return {
        "patched": True,
        "policy": policy.to_dict(),
        "policy_file": None if args.policy_file is None else str(args.policy_file),
        "kernel": args.kernel,
        "routing": args.routing,
        "tokens": report.tokens,
        **report.to_dict(),  # average_k, executed_pairs, native_pairs, compute_fraction, layers
    }


@register_model("adaptk")
class AdaptkLM(HFLM):
    """``--model adaptk --model_args pretrained=FOLDER|default[,policy=FILE | ,fixed_k=K][,kernel=..][,routing=..]``.

    With ``policy`` (a file of ``adaptk calibrate``, checked against the model) or ``fixed_k``,
    every MoE layer routes through that policy (``adaptk.patch(model, policy, kernel=, routing=)``);
    without, the model runs unpatched. Every other argument is HFLM's. ``device`` defaults to
    CUDA where there is one, else the CPU.

    The routing statistics count every forward pass of the model since it was patched (all the
    tasks of the run, and with ``batch_size=auto`` also HFLM's batch-size probes): ``adaptk_report``
    (a ``PatchReport``, None if unpatched), and in the results ``config.adaptk``
    (``get_model_info``, which lm-eval calls once after the run)."""

    def __init__(self, pretrained: str = "default", policy: str | None = None, fixed_k: int | None = None,
                 kernel: str | None = None, routing: str | None = None, device: str | None = None,
                 **kwargs: Any) -> None:
        args = patch_args(policy, fixed_k, kernel, routing, kernels=tuple(sorted(KERNELS)), routings=ROUTING_MODES)
        folder = model_folder(pretrained, default_model_path)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(kwargs.get("batch_size", "")).startswith("auto") and args.patched:
            log.warning("adaptk: with batch_size=auto the routing statistics also count HFLM's batch-size probe "
                        "passes (all-ones tokens); give a fixed batch_size for the statistics of the tasks alone")
        super().__init__(pretrained=str(folder), device=device, **kwargs)
        self.adaptk_args = args
        self.adaptk_policy: Policy | None = None
        self.adaptk_handle: PatchHandle | None = None
        if not args.patched:
            log.info("adaptk: no policy= or fixed_k= given: evaluating %s unpatched", folder)
            return
        model = self.model
        if args.policy_file is not None:
            policy_obj = load_policy_file(args.policy_file, model).build_policy()
        else:
            policy_obj = FixedTopK(args.fixed_k)
        self.adaptk_handle = patch(model, policy_obj, kernel=args.kernel, routing=args.routing)
        self.adaptk_policy = policy_obj
        log.info("adaptk: %s patched with %s (kernel=%s, routing=%s)", folder, policy_obj, args.kernel, args.routing)

    @property
    def adaptk_report(self) -> PatchReport | None:
        """The routing statistics since the patch (None when the model runs unpatched)."""
        return None if self.adaptk_handle is None else self.adaptk_handle.stats()

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        report = self.adaptk_report
        info["adaptk"] = summary(self.adaptk_args, self.adaptk_policy, report)
        if report is not None:
            log.info("adaptk: average k %.4f, compute fraction %.4f (%d of %d expert-token pairs executed, "
                     "%d tokens)", report.average_k, report.compute_fraction, report.executed_pairs,
                     report.native_pairs, report.tokens)
        return info

"""The adaptk model arguments of ``--model adaptk``, checked before anything is loaded (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adaptk.lm_eval.errors import LmEvalArgsError


@dataclass(frozen=True)
class PatchArgs:
    """What to patch the model with: a policy file, or FixedTopK(fixed_k), or nothing (unpatched)."""

    policy_file: Path | None = None
    fixed_k: int | None = None
    kernel: str = "exact"
    routing: str = "fused"

    @property
    def patched(self) -> bool:
        return self.policy_file is not None or self.fixed_k is not None


def model_folder(pretrained: object, default: Callable[[], Path]) -> Path:
    """``pretrained``: a local model folder, or "default" (the shipped model: ``default()``)."""
    if not isinstance(pretrained, str) or not pretrained:
        raise LmEvalArgsError(f"pretrained must be a model folder or 'default', got {pretrained!r}")
    path = default() if pretrained == "default" else Path(pretrained).expanduser()
    if not (path / "config.json").is_file():
        raise LmEvalArgsError(
            f"pretrained={pretrained}: {path} is not a model folder (no config.json); pass a folder that "
            "transformers' from_pretrained loads (model and tokenizer), or pretrained=default for the shipped model"
        )
    return path


def patch_args(policy: object = None, fixed_k: object = None, kernel: object = None, routing: object = None,
               *, kernels: tuple[str, ...], routings: tuple[str, ...]) -> PatchArgs:
    """Check the adaptk model arguments (as lm-eval parsed them: ``fixed_k=2`` arrives as int 2)."""
    if policy is not None and fixed_k is not None:
        raise LmEvalArgsError(f"give policy= or fixed_k=, not both (got policy={policy}, fixed_k={fixed_k})")
    if policy is not None:
        if not isinstance(policy, str) or not policy:
            raise LmEvalArgsError(f"policy must be the path of a policy file from `adaptk calibrate`, got {policy!r}")
        policy_file = Path(policy).expanduser()
        if not policy_file.is_file():
            raise LmEvalArgsError(f"policy={policy}: no such file; write one with `adaptk calibrate ... -o {policy}`")
    else:
        policy_file = None
    if fixed_k is not None and (not isinstance(fixed_k, int) or isinstance(fixed_k, bool) or fixed_k < 1):
        raise LmEvalArgsError(f"fixed_k must be an integer >= 1 (experts per token), got {fixed_k!r}")
    if policy_file is None and fixed_k is None and (kernel is not None or routing is not None):
        raise LmEvalArgsError("kernel= and routing= choose how a patched model runs; give policy= or fixed_k= too "
                              "(without them the model runs unpatched)")
    kernel = "exact" if kernel is None else kernel
    routing = "fused" if routing is None else routing
    if kernel not in kernels:
        raise LmEvalArgsError(f"kernel={kernel}: unknown; choose one of {', '.join(kernels)}")
    if routing not in routings:
        raise LmEvalArgsError(f"routing={routing}: unknown; choose one of {', '.join(routings)}")
    return PatchArgs(policy_file, fixed_k, kernel, routing)

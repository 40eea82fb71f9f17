"""adaptk in EleutherAI's lm-evaluation-harness (``pip install 'adaptk[lm-eval]'``).

The harness's model ``adaptk`` is its Hugging Face model (``HFLM``) with the model patched by
``adaptk.patch(model, policy)``; the run's average k and compute fraction are logged and stored
in the results under ``config.adaptk`` (``AdaptkLM.get_model_info``)::

    python -m adaptk.lm_eval --model adaptk --model_args pretrained=default,policy=policy.json \\
        --tasks TASK --device cpu

lm-eval 0.4 finds third-party models only in its registry, which its own CLI does not fill from
installed packages (no entry-point group), so ``python -m adaptk.lm_eval`` (or the
``adaptk-lm-eval`` script) registers ``adaptk`` and then runs lm-eval's own CLI with the same
arguments. From Python, ``adaptk.lm_eval.register()`` before ``lm_eval.simple_evaluate(model="adaptk", ...)``.

Importing ``adaptk`` does not import this package, and importing this package does not import
lm_eval: ``register()`` does.
"""

from __future__ import annotations

MODEL_NAME = "adaptk"
MODEL_TARGET = "adaptk.lm_eval.model:AdaptkLM"

__all__ = ["MODEL_NAME", "register"]


def register() -> None:
    """Make ``adaptk`` a model name of lm-eval's registry (idempotent). Raises ``LmEvalMissingError``
    where lm-eval is not installed."""
    from adaptk.lm_eval.errors import LmEvalMissingError

    try:
        import lm_eval.models  # noqa: F401  (its built-in names first: the registry loads them only while empty)
        from lm_eval.api.registry import model_registry
    except ImportError as exc:
        raise LmEvalMissingError(
            f"lm-evaluation-harness is not installed ({exc}); install it with pip install 'adaptk[lm-eval]'"
        ) from exc
    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)  # imported on first use

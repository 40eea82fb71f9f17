"""Evaluation: sliding-window perplexity, the paper's tables, and the side-by-side Pareto sweep.

``pipeline`` and ``sweep`` build on ``adaptk.calibrate`` (which uses ``perplexity``), so they are
loaded lazily here to keep the import graph acyclic.
"""

from adaptk.evaluate.perplexity import (
    PerplexityResult,
    TextTooShortError,
    WindowConfig,
    kl_to_reference,
    sliding_window_perplexity,
)

_LAZY = {"EvaluateConfig": "pipeline", "run_evaluation": "pipeline", "SweepConfig": "sweep",
         "format_table": "sweep", "pareto_sweep": "sweep"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"adaptk.evaluate.{_LAZY[name]}"), name)
    raise AttributeError(name)


__all__ = ["PerplexityResult", "TextTooShortError", "WindowConfig", "kl_to_reference",
           "sliding_window_perplexity", *_LAZY]

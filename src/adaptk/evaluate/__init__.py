"""Evaluation: sliding-window perplexity, the paper's tables, and the side-by-side Pareto sweep.

The perplexity names are ``adaptk.measure``'s, re-exported here; ``pipeline`` and ``sweep`` (which
build on ``adaptk.calibrate``) are loaded lazily so that importing this package stays light.
"""

from adaptk.measure import (
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

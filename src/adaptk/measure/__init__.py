"""Measuring a model: sliding-window perplexity, the window check, and one patched forward-pass
measure (perplexity and routing counters of a policy).

Below ``calibrate`` and ``evaluate`` (both use it); it imports only the engine adapter
(``adaptk.patch``), ``routing``, ``stats`` and ``errors``.
"""

from adaptk.measure.forward import Measured, measure
from adaptk.measure.perplexity import (
    PerplexityResult,
    TextTooShortError,
    WindowConfig,
    WindowTooLongError,
    check_window,
    default_window,
    kl_to_reference,
    position_limit,
    sliding_window_perplexity,
    trained_length,
)

__all__ = ["Measured", "PerplexityResult", "TextTooShortError", "WindowConfig", "WindowTooLongError",
           "check_window", "default_window", "kl_to_reference", "measure", "position_limit", "sliding_window_perplexity",
           "trained_length"]

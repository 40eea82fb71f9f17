"""Measuring a model: sliding-window perplexity, the window check, and one patched forward-pass
measure (perplexity and routing counters of a policy).

Below ``calibrate`` and ``evaluate`` (both use it); it imports only the engine adapter
(``adaptk.patch``), ``routing``, ``stats`` and ``errors``. ``intervals``: paired confidence
intervals of perplexity increases from per-token losses, and of one run's perplexity (pure functions).
"""

from adaptk.measure.forward import Measured, measure
from adaptk.measure.intervals import (
    Interval,
    IntervalConfig,
    IntervalError,
    difference_interval,
    paired_interval,
    perplexity_interval,
)
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
    token_blocks,
    trained_length,
)

__all__ = ["Interval", "IntervalConfig", "IntervalError", "Measured", "PerplexityResult", "TextTooShortError",
           "WindowConfig", "WindowTooLongError",
           "check_window", "default_window", "difference_interval", "kl_to_reference", "measure", "paired_interval",
           "perplexity_interval", "position_limit", "sliding_window_perplexity", "token_blocks", "trained_length"]

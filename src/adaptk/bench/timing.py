"""Interleaved wall-clock timing with warm-up and medians (ratios measured side by side)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device | None) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved(
    fns: dict[str, Callable[[], Any]], trials: int, warmup: int, device: torch.device | None = None,
    clock: str = "wall", min_sample_s: float = 0.005,
) -> dict[str, float]:
    """Median seconds per call of each function (``interleaved_samples``)."""
    samples = interleaved_samples(fns, trials, warmup, device, clock, min_sample_s)
    return {name: statistics.median(s) for name, s in samples.items()}


def paired_quartiles(num: list[float], den: list[float]) -> tuple[float, float]:
    """First and third quartiles of the per-trial ratios num[i] / den[i] (samples of one
    interleaved run, trial i of both taken side by side)."""
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    if len(ratios) < 2:
        return ratios[0], ratios[0]
    q = statistics.quantiles(ratios, n=4, method="inclusive")
    return q[0], q[2]


def interleaved_samples(
    fns: dict[str, Callable[[], Any]], trials: int, warmup: int, device: torch.device | None = None,
    clock: str = "wall", min_sample_s: float = 0.005,
) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per trial. Each trial runs every function once, in an
    order that rotates (and flips) from trial to trial, so drifts in machine load hit all of them
    alike. A function that returns a float reports its own timed span (untimed set-up excluded).

    A function faster than ``min_sample_s`` is called repeatedly within one sample (as
    ``timeit`` does) and the sample divided by the count, so that microsecond steps (a router)
    are not measured by one call's clock-reading noise (sized in the warm-up rounds).

    ``clock="cpu"`` measures this process's CPU time (all threads) instead of wall-clock time:
    steadier on a machine shared with other busy processes, blind to time spent waiting."""
    now = CLOCKS[clock]
    names = list(fns)
    repeats = dict.fromkeys(names, 1)
    with torch.inference_mode():
        for _ in range(warmup):  # warm-up rounds also size the repeats
            for name in names:
                sync(device)
                start = now()
                out = fns[name]()
                sync(device)
                elapsed = now() - start
                if not isinstance(out, float) and 0 < elapsed < min_sample_s:
                    repeats[name] = max(repeats[name], math.ceil(min_sample_s / elapsed))
        samples: dict[str, list[float]] = {name: [] for name in names}
        for trial in range(trials):
            order = names[trial % len(names):] + names[: trial % len(names)]
            if trial % 2:
                order.reverse()
            for name in order:
                fn, n = fns[name], repeats[name]
                sync(device)
                start = now()
                for _ in range(n):
                    out = fn()
                sync(device)
                elapsed = (now() - start) / n
                samples[name].append(out if isinstance(out, float) else elapsed)
    return samples

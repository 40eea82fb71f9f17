"""Run every part of the bench in one process and collect one result dict."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable
from typing import Any

import torch

from adaptk.bench.config import BenchConfig
from adaptk.bench.layer import bench_layer
from adaptk.bench.model import bench_model

log = logging.getLogger(__name__)


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"torch": torch.__version__, "transformers": transformers.__version__, "device": name,
            "threads": torch.get_num_threads(), "cpu": cpu_name(), "cores": os.cpu_count()}


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo, else the platform module's guess), or "cpu"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def run_bench(
    cfg: BenchConfig, preset: str = "custom", device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    dev = torch.device(device)
    say = progress or log.info
    saved_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, preset, dev, say)
    finally:
        torch.set_num_threads(saved_threads)


def _run(cfg: BenchConfig, preset: str, dev: torch.device, say: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {"preset": preset, "dtype": cfg.dtype, "trials": cfg.trials, "warmup": cfg.warmup,
                              "clock": cfg.clock,
                              "environment": environment(dev), "layers": [], "models": []}
    for shape in cfg.shapes:
        say(f"layer {shape.label}")
        result["layers"].append(bench_layer(shape, cfg, dev))
    if cfg.model is not None:
        for spec in cfg.model.models:
            say(f"end-to-end model {spec}")
            result["models"].append(bench_model(cfg, spec))
    return result

"""``adaptk bench``: fixed vs adaptive k, side by side, on MoE layers and whole models.

Everything is measured in one run, interleaved, with warm-up and medians, so that ratios stay
meaningful on a shared, noisy machine. Entry point: ``run_bench(BenchConfig)``.
"""

from adaptk.bench.config import PRESETS, BenchConfig, KMix, LayerShape
from adaptk.bench.runner import run_bench

__all__ = ["PRESETS", "BenchConfig", "KMix", "LayerShape", "run_bench"]

"""Bench configuration: layer shapes, k mixes and the ``--quick`` / ``--full`` presets."""

from __future__ import annotations

from dataclasses import dataclass, field

DTYPES = ("float32", "bfloat16")
CLOCKS = ("wall", "cpu")


@dataclass(frozen=True)
class LayerShape:
    """One MoE layer: N experts of width ``intermediate``, native top-k, T tokens."""

    name: str
    hidden: int
    intermediate: int
    num_experts: int
    top_k: int
    tokens: int

    def __post_init__(self) -> None:
        for attr in ("hidden", "intermediate", "num_experts", "top_k", "tokens"):
            if not isinstance(getattr(self, attr), int) or getattr(self, attr) < 1:
                raise ValueError(f"LayerShape.{attr} must be an integer >= 1, got {getattr(self, attr)!r}")
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k {self.top_k} > num_experts {self.num_experts}")

    @property
    def label(self) -> str:
        return f"{self.name} H{self.hidden} I{self.intermediate} {self.num_experts}x top-{self.top_k} T{self.tokens}"


@dataclass(frozen=True)
class KMix:
    """Fractions of tokens at each k (keys <= native k); fractions sum to 1."""

    name: str
    fractions: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        if not self.fractions:
            raise ValueError("a k mix needs at least one (k, fraction) pair")
        if any(k < 1 or f < 0 for k, f in self.fractions):
            raise ValueError(f"k must be >= 1 and fractions >= 0, got {self.fractions}")
        total = sum(f for _, f in self.fractions)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"fractions of k mix {self.name!r} sum to {total}, not 1")

    def kmax(self) -> int:
        return max(k for k, f in self.fractions if f > 0)


def default_mixes(top_k: int) -> list[KMix]:
    """The k mixes measured against fixed top-k: half at k=1, all at k=1, all at k/2."""
    mixes = [KMix("half k=1", ((1, 0.5), (top_k, 0.5))), KMix("all k=1", ((1, 1.0),))]
    if top_k >= 4:
        mixes.insert(1, KMix(f"all k={top_k // 2}", ((top_k // 2, 1.0),)))
    return mixes


@dataclass(frozen=True)
class ModelBench:
    """End-to-end model timing: prefill and decode at the given batch sizes."""

    prompt_len: int = 64
    decode_steps: int = 8
    batch_sizes: tuple[int, ...] = (1, 16)
    # model folders, "default" (the shipped model) or names in adaptk.bench.model.SYNTHETIC_MODELS
    models: tuple[str, ...] = ("default", "random-mixtral-h1024")

    def __post_init__(self) -> None:
        if self.prompt_len < 1 or self.decode_steps < 1 or not self.batch_sizes:
            raise ValueError("prompt_len, decode_steps >= 1 and at least one batch size are required")
        if not self.models:
            raise ValueError("ModelBench needs at least one model")


def check_kernel_names(names: tuple[str, ...]) -> None:
    """``ValueError`` unless ``names`` are known adaptk kernels including "exact" (every other
    kernel's ratios and bounds are read beside the exact one)."""
    from adaptk.experts.kernels import KERNELS

    if "exact" not in names or any(k not in KERNELS for k in names):
        raise ValueError(f"kernels must include 'exact' and name only {sorted(KERNELS)}, got {names}")


@dataclass(frozen=True)
class BenchConfig:
    """What ``run_bench`` measures and how often."""

    shapes: tuple[LayerShape, ...]
    trials: int = 3
    warmup: int = 1
    dtype: str = "float32"
    seed: int = 0
    backends: tuple[str, ...] = ("eager", "grouped_mm", "batched_mm")
    kernels: tuple[str, ...] = ("exact", "onednn", "onednn-packed", "native")  # adaptk's matmul kernels
    strategies: bool = True  # also time padded and grouped-by-k batching
    memory: bool = True
    routing: bool = True
    model: ModelBench | None = field(default_factory=ModelBench)
    max_batched_bytes: int = 512 << 20  # skip batched_mm when its gathered weights exceed this
    clock: str = "wall"  # "wall" (perf_counter) or "cpu" (process CPU time, steadier on a busy machine)
    threads: int | None = None  # torch intra-op threads for the run (None: leave as is)

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ValueError("BenchConfig needs at least one layer shape")
        if self.trials < 1 or self.warmup < 0:
            raise ValueError(f"trials must be >= 1 and warmup >= 0, got {self.trials}, {self.warmup}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {self.clock!r}")
        check_kernel_names(self.kernels)
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def _quick_shapes() -> tuple[LayerShape, ...]:
    return (
        LayerShape("mixtral-like", 1024, 3584, 8, 2, 512),
        LayerShape("mixtral-like", 1024, 3584, 8, 2, 16),
        LayerShape("mixtral-like", 1024, 3584, 8, 2, 1),
        LayerShape("olmoe-like", 1024, 512, 64, 8, 512),
        LayerShape("qwen-like", 1024, 704, 60, 4, 512),
    )


def _full_shapes() -> tuple[LayerShape, ...]:
    shapes = []
    for tokens in (1, 16, 512, 4096):
        shapes += [
            LayerShape("mixtral-like", 1024, 3584, 8, 2, tokens),
            LayerShape("mixtral-like", 4096, 14336, 8, 2, tokens),
            LayerShape("olmoe-like", 2048, 1024, 64, 8, tokens),
            LayerShape("qwen-like", 2048, 1408, 60, 4, tokens),
        ]
    return tuple(shapes)


PRESETS = {
    "quick": lambda: BenchConfig(_quick_shapes(), trials=3, warmup=1, model=ModelBench(32, 4, (1, 16))),
    "full": lambda: BenchConfig(_full_shapes(), trials=7, warmup=2, model=ModelBench(128, 32, (1, 16))),
}

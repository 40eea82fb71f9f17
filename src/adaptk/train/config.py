"""``TrainConfig`` and ``RoutingControls``: validated dataclasses, one per concern."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from adaptk.train.errors import TrainConfigError


@dataclass(frozen=True)
class RoutingControls:
    """Training-time routing controls (all off / native at their defaults except the two losses).

    - ``balance_coef``: Switch load-balancing loss weight (Fedus et al. 2021 eq. 4).
    - ``z_loss_coef``: router z-loss weight (ST-MoE, Zoph et al. 2022 eq. 5).
    - ``entropy_coef``: ``loss += coef * (-mean routing entropy)``; > 0 spreads routing, < 0 sharpens.
    - ``aux_free_bias_speed``: DeepSeek-V3 bias balancing speed gamma (0 = off).
    - ``jitter``: multiplicative input jitter eps; ``logit_noise``: Gaussian logit noise std.
    - ``temperature_start``/``temperature_end``: gate temperature, linear over training.
    - ``dense_steps``/``sparsify_steps``: delayed sparsification (all experts, then k annealed to native).
    - ``capacity_factor``: expert capacity (0 = unlimited); over-capacity slots are dropped.
    """

    balance_coef: float = 0.01
    z_loss_coef: float = 0.001
    entropy_coef: float = 0.0
    aux_free_bias_speed: float = 0.0
    jitter: float = 0.0
    logit_noise: float = 0.0
    temperature_start: float = 1.0
    temperature_end: float = 1.0
    dense_steps: int = 0
    sparsify_steps: int = 0
    capacity_factor: float = 0.0

    def __post_init__(self) -> None:
        for name in ("balance_coef", "z_loss_coef", "aux_free_bias_speed", "jitter", "logit_noise",
                     "capacity_factor"):
            if getattr(self, name) < 0:
                raise TrainConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.jitter >= 1:
            raise TrainConfigError(f"jitter must be in [0, 1) (x * U(1-eps, 1+eps)), got {self.jitter}")
        if self.temperature_start <= 0 or self.temperature_end <= 0:
            raise TrainConfigError("temperatures must be > 0 (1.0 is the native router)")
        if self.dense_steps < 0 or self.sparsify_steps < 0:
            raise TrainConfigError("dense_steps and sparsify_steps must be >= 0")
        if 0 < self.capacity_factor < 1.0 / 64:
            raise TrainConfigError(f"capacity_factor {self.capacity_factor} would drop nearly every token; use >= 1 (or 0 for no limit)")

    @property
    def changes_routing(self) -> bool:
        return bool(self.aux_free_bias_speed or self.jitter or self.logit_noise or self.dense_steps
                    or self.sparsify_steps or self.capacity_factor
                    or self.temperature_start != 1.0 or self.temperature_end != 1.0)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``corpus`` is a corpus name (``stdlib``, ``gutenberg``) unless
    ``text_files`` is given; ``text`` (in-memory train text, tests/API) overrides both."""

    preset: str = "mixtral-mini"
    out: Path = Path("adaptk-model")
    corpus: str = "stdlib"
    text_files: tuple[str, ...] = ()
    text: str | None = None
    valid_text: str | None = None
    steps: int = 1000
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    seed: int = 0
    vocab_size: int = 4096
    overwrite: bool = False
    resume: bool = False
    allow_changed_config: bool = False  # on resume: accept (and record) changed run values
    log_every: int = 25
    ckpt_every: int = 200
    eval_batches: int = 40
    heldout_tokens: int = 16384  # per split, the model card's spread sample (adaptk.train.heldout)
    threads: int | None = None
    progress: bool = True
    stop_after: int | None = None  # stop (with a checkpoint) after this step; continue with resume
    keep_checkpoints: bool = False  # keep <out>/checkpoints after a finished run
    model_overrides: dict = field(default_factory=dict)
    controls: RoutingControls = field(default_factory=RoutingControls)

    def __post_init__(self) -> None:
        from adaptk.train.presets import PRESETS

        if self.preset not in PRESETS:
            raise TrainConfigError(f"unknown preset {self.preset!r}; valid presets: {', '.join(sorted(PRESETS))}")
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "text_files", tuple(str(p) for p in self.text_files))
        for name in ("steps", "batch_size", "seq_len", "log_every", "ckpt_every", "eval_batches"):
            if int(getattr(self, name)) < 1:
                raise TrainConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.heldout_tokens) < 2:
            raise TrainConfigError(f"heldout_tokens must be >= 2 (tokens per split of the card's held-out sample), "
                                   f"got {self.heldout_tokens}")
        if self.lr <= 0:
            raise TrainConfigError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise TrainConfigError("warmup_steps must be >= 0")
        if self.vocab_size < 300:
            raise TrainConfigError(f"vocab_size must be >= 300, got {self.vocab_size}")
        if self.overwrite and self.resume:
            raise TrainConfigError("--overwrite and --resume contradict each other; pick one")
        if self.allow_changed_config and not self.resume:
            raise TrainConfigError("--allow-changed-config applies only with --resume; drop it or add --resume")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        d["text"] = None if self.text is None else f"<{len(self.text)} chars in memory>"
        d["valid_text"] = None if self.valid_text is None else f"<{len(self.valid_text)} chars in memory>"
        return d

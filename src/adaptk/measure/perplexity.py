"""Perplexity by the standard strided sliding window (the Hugging Face "perplexity of
fixed-length models" method).

Windows of ``window`` tokens start every ``stride`` tokens; each window scores only the tokens
not scored by an earlier window, with the earlier ones as context. ``stride == window`` is
plain non-overlapping evaluation. Per-token losses are returned, aligned to token positions
1..L-1 (position 0 has no prediction).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from adaptk.errors import AdaptkError

log = logging.getLogger(__name__)

# config fields that bound the sequence length a model was built for (the first one set wins)
POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


class TextTooShortError(AdaptkError, ValueError):
    """The evaluation text is shorter than what the method needs."""


class WindowTooLongError(AdaptkError, ValueError):
    """A window (sequence length) beyond the positions the model has."""


def position_limit(config) -> tuple[int, str] | None:
    """(positions, config field) of the longest sequence a model config allows, or None if unknown."""
    for name in POSITION_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, name
    return None


def trained_length(summary: dict) -> int | None:
    """The training sequence length recorded in an ``adaptk train`` summary (``seq_len`` at the top
    level or under ``config``), or None."""
    for value in (summary.get("seq_len"), (summary.get("config") or {}).get("seq_len")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _recorded_train_length(model: nn.Module) -> tuple[int, Path] | None:
    folder = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not folder:
        return None
    path = Path(str(folder)) / "train_summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError) as exc:
        log.debug("cannot read %s: %s", path, exc)
        return None
    length = trained_length(summary) if isinstance(summary, dict) else None
    return (length, path) if length else None


_warned: set[tuple[str, int]] = set()


def check_window(model: nn.Module, window: int) -> None:
    """Refuse a window (tokens per forward sequence) longer than the model's positions
    (``WindowTooLongError``, naming the limit); log a warning once when it is longer than the
    training length recorded in the model folder's ``train_summary.json``."""
    config = getattr(model, "config", None)
    limit = position_limit(config)
    name = getattr(model, "name_or_path", None) or type(model).__name__
    if limit is not None and window > limit[0]:
        raise WindowTooLongError(
            f"a window of {window} tokens is longer than the {limit[0]} positions of model {name} "
            f"(config {limit[1]}); its perplexity and routing there mean nothing: use a window of at most "
            f"{limit[0]} tokens (--window {limit[0]})")
    recorded = _recorded_train_length(model)
    if recorded is not None and window > recorded[0] and (str(recorded[1]), window) not in _warned:
        _warned.add((str(recorded[1]), window))
        log.warning("window %d is longer than the training sequence length %d recorded in %s: the model has "
                    "not seen positions beyond %d; results may be worse than at --window %d",
                    window, recorded[0], recorded[1], recorded[0], recorded[0])


def default_window(model: nn.Module, fallback: int) -> int:
    """The window a command uses when none is given: ``fallback``, shortened to the training length
    recorded in the model folder (``adaptk train``'s summary) and to the model's positions, so that a
    default never measures positions the model has not been trained at."""
    window = fallback
    recorded = _recorded_train_length(model)
    if recorded is not None:
        window = min(window, recorded[0])
    limit = position_limit(getattr(model, "config", None))
    if limit is not None:
        window = min(window, limit[0])
    return max(window, 2)


@dataclass(frozen=True)
class WindowConfig:
    window: int = 512
    stride: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 2:
            raise AdaptkError(f"window must be an integer >= 2 tokens, got {self.window!r}")
        if not isinstance(self.stride, int) or not 1 <= self.stride <= self.window:
            raise AdaptkError(f"stride must be an integer in [1, window={self.window}], got {self.stride!r}")


@dataclass
class PerplexityResult:
    nll: float  # mean negative log-likelihood, nats/token
    tokens: int  # tokens scored
    window: int
    stride: int
    seconds: float
    token_loss: torch.Tensor  # [L-1] float32, loss of predicting token i+1
    logprobs: torch.Tensor | None = None  # [L-1, V] float32 (float16 if huge) if requested

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def block_ids(self) -> torch.Tensor:
        """The window that scored each entry of ``token_loss`` (the blocks of ``adaptk.measure.intervals``). [L-1]"""
        return token_blocks(self.token_loss.numel() + 1, WindowConfig(self.window, self.stride))


def plan_windows(n: int, cfg: WindowConfig) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of every window over n tokens."""
    out, prev_end = [], 0
    for begin in range(0, n, cfg.stride):
        end = min(begin + cfg.window, n)
        if end - begin < 2 or end <= prev_end:
            break
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
    return out


def token_blocks(n: int, cfg: WindowConfig) -> torch.Tensor:
    """Index of the window that scores each prediction position 0..n-2 (position i predicts token
    i+1), -1 where none does. [n-1] int64"""
    out = torch.full((max(n - 1, 0),), -1, dtype=torch.long)
    for b, (_, end, first) in enumerate(plan_windows(n, cfg)):
        out[first - 1: end - 1] = b
    return out


def _batches(windows: list[tuple[int, int, int]], batch_size: int):
    """Consecutive windows of equal length, at most ``batch_size`` at a time."""
    batch: list[tuple[int, int, int]] = []
    for w in windows:
        if batch and (len(batch) == batch_size or w[1] - w[0] != batch[0][1] - batch[0][0]):
            yield batch
            batch = []
        batch.append(w)
    if batch:
        yield batch


@torch.no_grad()
def sliding_window_perplexity(model: nn.Module, ids: torch.Tensor, cfg: WindowConfig = WindowConfig(),
                              keep_logprobs: bool = False, progress: bool = False,
                              desc: str = "perplexity", batch_size: int = 8) -> PerplexityResult:
    """ids [L] int64 -> PerplexityResult over all L-1 predictable tokens.

    Windows are independent, so equal-length ones run ``batch_size`` at a time ([B, W]).
    """
    from tqdm.auto import tqdm

    ids = ids.reshape(-1)
    n = ids.shape[0]
    if n < cfg.window:
        raise TextTooShortError(f"text has {n} tokens, shorter than one window of {cfg.window}; "
                                "give more text or a smaller --window")
    check_window(model, cfg.window)
    device = next(model.parameters()).device
    token_loss = torch.full((n - 1,), float("nan"))
    logprobs = None
    windows = plan_windows(n, cfg)
    t0 = time.perf_counter()
    bar = tqdm(total=len(windows), desc=desc, disable=not progress, leave=False)
    for batch in _batches(windows, batch_size):
        x = torch.stack([ids[b:e] for b, e, _ in batch]).to(device)  # [B, W]
        logits = model(input_ids=x, use_cache=False).logits.float()  # [B, W, V]
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # [B, W-1, V]: position j predicts token j+1
        loss = -logp.gather(2, x[:, 1:].unsqueeze(-1)).squeeze(-1).cpu()  # [B, W-1]
        for i, (begin, end, first) in enumerate(batch):
            sl = slice(first - begin - 1, end - begin - 1)
            token_loss[first - 1: end - 1] = loss[i, sl]
            if keep_logprobs:
                if logprobs is None:
                    # float32 unless that would pass 1 GiB (then float16: KL then carries ~1e-5 noise)
                    big = (n - 1) * logp.shape[-1] > 2**28
                    logprobs = torch.zeros(n - 1, logp.shape[-1], dtype=torch.float16 if big else torch.float32)
                logprobs[first - 1: end - 1] = logp[i, sl].to(logprobs.dtype).cpu()
        bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - t0
    scored = int(torch.isfinite(token_loss).sum())
    nll = float(token_loss.double().nansum() / scored)
    return PerplexityResult(nll, scored, cfg.window, cfg.stride, seconds, token_loss, logprobs)


def kl_to_reference(ref_logprobs: torch.Tensor, logprobs: torch.Tensor) -> float:
    """Mean over tokens of KL(ref || new), both [T, V] log-probabilities."""
    r, q = ref_logprobs.float(), logprobs.float()
    return float((r.exp() * (r - q)).sum(dim=-1).mean())

"""The model card's held-out perplexity: valid and test on a representative (spread) sample.

The sample is the one ``adaptk evaluate --sample spread`` draws (``adaptk.data.sample``): a token
budget shared evenly over every document (file, book, article) of the whole split, in pieces of
``piece_tokens(window)`` tokens, in a fixed pseudo-random order; perplexity by the strided sliding
window with the training sequence length as window and half of it as stride, with a 95% block
bootstrap interval over the windows. For a named corpus the numbers are therefore the native
perplexity ``adaptk evaluate --model OUT --corpus C --split S --eval-tokens N --window W --stride W/2``
prints. The training-time evaluation (the first windows of the valid text, which also gives the
card's routing statistics) is kept as it is, under ``routing_eval``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from adaptk.data.corpus import Corpus, load_corpus, text_file_splits
from adaptk.data.errors import CorpusError
from adaptk.data.sample import piece_tokens, spread_sample
from adaptk.loading.model import encode
from adaptk.measure import IntervalConfig, WindowConfig, perplexity_interval, sliding_window_perplexity
from adaptk.train.errors import TrainConfigError

log = logging.getLogger(__name__)

CARD_TOKENS = 16384  # the evaluate command's default --eval-tokens
HELDOUT_SPLITS = ("valid", "test")


@dataclass(frozen=True)
class HeldoutSpec:
    """How the held-out sample is drawn and scored: ``tokens`` per split, windows of ``window``
    tokens every ``stride`` (default: half the window)."""

    window: int
    tokens: int = CARD_TOKENS
    stride: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tokens, int) or self.tokens < 2:
            raise TrainConfigError(f"held-out tokens must be an integer >= 2, got {self.tokens!r}")
        WindowConfig(self.window, self.resolved_stride)  # validates window and stride

    @property
    def resolved_stride(self) -> int:
        return self.stride if self.stride is not None else max(1, self.window // 2)


def heldout_corpora(corpus: str | None, text_files: tuple | list = (), valid: Corpus | None = None,
                    ) -> dict[str, Corpus | None]:
    """The whole valid and test splits the card samples from: a named corpus's splits uncapped (as
    ``adaptk evaluate`` reads them), the 90/5/5 line splits of local text files, else only the given
    in-memory ``valid`` text (an in-memory run has no test split). A split that is empty is None."""
    out: dict[str, Corpus | None] = {}
    for split in HELDOUT_SPLITS:
        try:
            if text_files:
                out[split] = text_file_splits(list(text_files), split)
            elif corpus:
                out[split] = load_corpus(corpus, split, capped=False)
            else:
                out[split] = valid if split == "valid" else None
        except CorpusError as exc:
            log.warning("no %s split for the model card's held-out perplexity: %s", split, exc)
            out[split] = None
    return out


def sample_ids(tokenizer, corpus: Corpus, spec: HeldoutSpec) -> torch.Tensor:
    """The spread sample's token ids [L] of one split (the ids ``adaptk evaluate`` scores)."""
    docs = [encode(tokenizer, d).tolist() for d in corpus.documents]
    return torch.tensor(spread_sample(docs, spec.tokens, piece_tokens(spec.window)), dtype=torch.long)


@torch.no_grad()
def heldout_perplexity(model, tokenizer, corpus: Corpus, spec: HeldoutSpec) -> dict | None:
    """Perplexity of ``model`` (native routing, eval mode) on the spread sample of one split, with
    the sample named; None (logged) when the split holds fewer tokens than one window."""
    ids = sample_ids(tokenizer, corpus, spec)
    cfg = WindowConfig(spec.window, spec.resolved_stride)
    if ids.numel() < cfg.window + 1:
        log.warning("%s:%s has %d tokens, fewer than one window of %d: no held-out perplexity for it",
                    corpus.name, corpus.split, ids.numel(), cfg.window)
        return None
    was_training = model.training
    model.eval()
    try:
        res = sliding_window_perplexity(model, ids, cfg)
    finally:
        model.train(was_training)
    iv = perplexity_interval(res.token_loss, res.block_ids(), IntervalConfig())
    return {
        "corpus": corpus.name, "split": corpus.split, "sha256": corpus.sha256,
        "documents": len(corpus.documents),
        "sample": {"kind": "spread", "tokens": int(ids.numel()), "budget": spec.tokens,
                   "piece": piece_tokens(spec.window), "seed": 0},
        "window": cfg.window, "stride": cfg.stride, "tokens_scored": res.tokens,
        "loss": res.nll, "ppl": res.ppl, "ppl_lo": iv.lo, "ppl_hi": iv.hi,
        "interval": {"level": iv.level, "method": iv.method, "blocks": iv.blocks},
    }


def heldout_results(model, tokenizer, corpora: dict[str, Corpus | None], spec: HeldoutSpec) -> dict[str, dict | None]:
    """``{"valid": ..., "test": ...}`` of :func:`heldout_perplexity` (None where a split is missing)."""
    return {split: heldout_perplexity(model, tokenizer, c, spec) if c is not None else None
            for split, c in corpora.items()}

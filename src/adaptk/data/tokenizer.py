"""A byte-level BPE tokenizer trained offline (``tokenizers``) and wrapped for ``AutoTokenizer``."""

from __future__ import annotations

import logging
from pathlib import Path

from adaptk.data.errors import CorpusError

log = logging.getLogger(__name__)
EOS = "<|endoftext|>"


def train_bpe(text: str, vocab_size: int, *, min_frequency: int = 2):
    """Train a byte-level BPE on ``text``; returns a ``transformers.PreTrainedTokenizerFast`` whose
    bos/eos/pad token is ``<|endoftext|>``. Deterministic for a given text and vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not text.strip():
        raise CorpusError("cannot train a tokenizer on empty text; give a corpus with text in it")
    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    chunk = 1 << 16
    tok.train_from_iterator((text[i:i + chunk] for i in range(0, len(text), chunk)), trainer=trainer)
    log.info("trained byte-level BPE: %d tokens", tok.get_vocab_size())
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                   model_max_length=1 << 20)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of a long text, encoded in line-aligned chunks (fast and identical across runs)."""
    ids: list[int] = []
    lines = text.splitlines(keepends=True)
    step = 2000
    for i in range(0, len(lines), step):
        ids.extend(tokenizer("".join(lines[i:i + step]), add_special_tokens=False)["input_ids"])
    return ids


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))

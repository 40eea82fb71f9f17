"""Tiny models with controlled routing, a tiny offline tokenizer, and a saved model folder."""

from __future__ import annotations

import random

import torch
from tiny_models import tiny_model

WORDS = [f"w{i}" for i in range(60)]


def controlled_mixtral(seed: int = 0):
    """Tiny Mixtral (2 MoE layers, N=8, k=2): layer 0's router is zero (uniform routing,
    entropy = log 8 for every token), layer 1's is scaled up (sharp routing, low entropy)."""
    model = tiny_model("mixtral", seed=seed)
    with torch.no_grad():
        model.model.layers[0].mlp.gate.weight.zero_()
        model.model.layers[1].mlp.gate.weight.mul_(6.0)
    return model


def random_ids(n: int, seed: int = 0, vocab: int = 64) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def random_text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS[: 20 + (seed % 3) * 10]) for _ in range(n_words))


def saved_tiny_model(path, seed: int = 0) -> str:
    tiny_model("mixtral", seed=seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)

"""Scoring multiple-choice items: the sum of each choice's token log-likelihoods given its context.

Items of one context length are batched; each context is run once (with the KV cache) and its
cache repeated for the choices, which are then run together, right-padded (a causal model never
looks at the padding that follows a scored token). Shapes: B items, C choices, L tokens, V vocabulary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from adaptk.errors import AdaptkError

log = logging.getLogger(__name__)


class ChoiceError(AdaptkError, ValueError):
    """Items that cannot be scored (no choices, an empty choice, mixed numbers of choices)."""


@dataclass(frozen=True)
class TokenItem:
    """A multiple-choice item in token ids: ``context`` then one of ``choices``; ``answer`` is the true one."""

    context: tuple[int, ...]
    choices: tuple[tuple[int, ...], ...]
    answer: int


def encode_items(items: Sequence, encode: Callable[[str], Sequence[int]], window: int) -> list[TokenItem]:
    """Token items of text items (``adaptk.data.cloze.ChoiceItem``): each context keeps its last
    ``window - longest choice`` tokens, so that context and choice fit one window; an item whose
    longest choice leaves fewer than 8 context tokens, or whose context is empty, is left out (logged)."""
    out, dropped = [], 0
    for it in items:
        choices = tuple(tuple(int(t) for t in encode(c)) for c in it.choices)
        keep = window - max(len(c) for c in choices)
        context = tuple(int(t) for t in encode(it.context))[-keep:] if keep >= 8 else ()
        if not context or not all(choices):
            dropped += 1
            continue
        out.append(TokenItem(context, choices, int(it.answer)))
    if dropped:
        log.info("left out %d of %d items (a choice too long for a window of %d tokens, or nothing to score)",
                 dropped, len(items), window)
    return out


def _batches(items: Sequence[TokenItem], batch_size: int) -> list[list[int]]:
    """Indices of the items in batches of one context length (in order of length, then index)."""
    order = sorted(range(len(items)), key=lambda i: (len(items[i].context), i))
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < batch_size and len(items[out[-1][0]].context) == len(items[i].context):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _check(items: Sequence[TokenItem]) -> int:
    if not items:
        raise ChoiceError("no items to score; build at least one item")
    n = len(items[0].choices)
    for it in items:
        if len(it.choices) != n or n < 2:
            raise ChoiceError(f"every item needs the same number (>= 2) of choices; got {len(it.choices)} and {n}")
        if not it.context or not all(it.choices):
            raise ChoiceError("an item has an empty context or choice; encode_items leaves such items out")
    return n


@torch.no_grad()
def choice_loglikelihoods(model: nn.Module, items: Sequence[TokenItem], *, batch_size: int = 16) -> torch.Tensor:
    """[n items, C] float64: the sum over each choice's tokens of log p(token | context, earlier tokens)."""
    n_choices = _check(items)
    device = next(model.parameters()).device
    out = torch.empty(len(items), n_choices, dtype=torch.float64)
    for idx in _batches(items, batch_size):
        ctx = torch.tensor([items[i].context for i in idx], device=device)  # [B, Lc]
        res = model(input_ids=ctx, use_cache=True)
        first = torch.log_softmax(res.logits[:, -1].float(), -1).double()  # [B, V]
        cache = res.past_key_values
        cache.batch_repeat_interleave(n_choices)
        conts = [c for i in idx for c in items[i].choices]  # B*C choices, item by item
        lens = torch.tensor([len(c) for c in conts], device=device)  # [B*C]
        x = torch.zeros(len(conts), int(lens.max()), dtype=torch.long, device=device)  # [B*C, L], right-padded
        for r, c in enumerate(conts):
            x[r, : len(c)] = torch.tensor(c)
        logits = model(input_ids=x, past_key_values=cache, use_cache=True).logits  # [B*C, L, V]
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, x[:, 1:, None]).squeeze(-1)  # [B*C, L-1]
        scored = torch.arange(x.shape[1] - 1, device=device) < (lens - 1)[:, None]  # [B*C, L-1]
        head = first.repeat_interleave(n_choices, 0).gather(1, x[:, :1]).squeeze(1)  # [B*C]
        total = head + (lp.double() * scored).sum(1)
        out[idx] = total.reshape(len(idx), n_choices).cpu()
    return out


def accuracy(scores: torch.Tensor, items: Sequence[TokenItem]) -> torch.Tensor:
    """[n] bool: whether the highest-scoring choice (the first among equals) is the true one."""
    answers = torch.tensor([it.answer for it in items])
    return scores.argmax(1) == answers

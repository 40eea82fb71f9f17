"""Sliding-window perplexity against a plain reference (the Hugging Face recipe with labels)."""

from __future__ import annotations

import math

import pytest
import torch
from calibrate.helpers import random_ids
from tiny_models import tiny_model

from adaptk.errors import AdaptkError
from adaptk.measure import (
    TextTooShortError,
    WindowConfig,
    kl_to_reference,
    sliding_window_perplexity,
)


def reference_ppl(model, ids, window, stride):
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, ids.numel(), stride):
        end = min(begin + window, ids.numel())
        trg_len = end - prev_end
        x = ids[begin:end].unsqueeze(0)
        labels = x.clone()
        labels[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids=x, labels=labels).loss
        valid = int((labels[:, 1:] != -100).sum())
        nll_sum += float(loss) * valid
        n_tokens += valid
        prev_end = end
        if end == ids.numel():
            break
    return math.exp(nll_sum / n_tokens), n_tokens


@pytest.fixture(scope="module")
def model():
    return tiny_model("mixtral")


@pytest.mark.parametrize("window, stride", [(32, 32), (32, 16), (32, 8), (48, 20)])
def test_matches_reference(model, window, stride):
    ids = random_ids(150, seed=3)
    res = sliding_window_perplexity(model, ids, WindowConfig(window, stride))
    ref, n = reference_ppl(model, ids, window, stride)
    assert res.tokens == n
    assert res.ppl == pytest.approx(ref, rel=1e-5)
    assert (res.window, res.stride) == (window, stride)


def test_overlap_scores_every_token_once(model):
    ids = random_ids(100, seed=4)
    res = sliding_window_perplexity(model, ids, WindowConfig(32, 8))
    assert res.tokens == 99 and torch.isfinite(res.token_loss).all()


def test_kl_of_identical_is_zero(model):
    ids = random_ids(64, seed=5)
    res = sliding_window_perplexity(model, ids, WindowConfig(32, 32), keep_logprobs=True)
    lp = res.logprobs[torch.isfinite(res.token_loss)]
    assert kl_to_reference(lp, lp) == pytest.approx(0.0, abs=1e-6)


def test_too_short_and_bad_config(model):
    with pytest.raises(TextTooShortError, match="shorter than one window"):
        sliding_window_perplexity(model, random_ids(10), WindowConfig(32, 16))
    with pytest.raises(AdaptkError, match="stride"):
        WindowConfig(32, 64)

"""The model card's held-out perplexity: the spread sample ``adaptk evaluate`` scores, in the card
and the summary, and recomputed for an existing folder (``refresh_card``)."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adaptk.assets import default_model_path
from adaptk.data import load_corpus
from adaptk.measure import WindowConfig, sliding_window_perplexity
from adaptk.outputs import OutputExistsError
from adaptk.train import TrainConfigError, train
from adaptk.train.card import SUMMARY_FILE, render_card
from adaptk.train.heldout import HeldoutSpec, heldout_corpora, heldout_perplexity, sample_ids
from adaptk.train.refresh import refresh_card


@pytest.fixture(scope="module")
def default_model():
    path = str(default_model_path())
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_heldout_scores_the_tokens_evaluate_scores(default_model):
    """The sample is ``adaptk evaluate --sample spread``'s (its ``text_ids``), over every document of
    the whole (uncapped) split; the perplexity is the sliding window's on it, with an interval."""
    from adaptk.cli.args import piece_tokens, text_ids

    model, tok = default_model
    corpus = load_corpus("stdlib", "test", capped=False)
    spec = HeldoutSpec(window=64, tokens=3000)
    args = argparse.Namespace(corpus="stdlib", split="test", text_file=None, dataset=None, sample="spread")
    ids, _ = text_ids(args, "", tok, 3000, piece_tokens(64))
    assert torch.equal(sample_ids(tok, corpus, spec), ids) and ids.numel() == 3000
    h = heldout_perplexity(model, tok, corpus, spec)
    ref = sliding_window_perplexity(model, ids, WindowConfig(64, 32))
    assert h["ppl"] == pytest.approx(ref.ppl, rel=1e-9)
    assert h["ppl"] == pytest.approx(math.exp(float(ref.token_loss.double().nanmean())), rel=1e-9)
    assert h["ppl_lo"] < h["ppl"] < h["ppl_hi"] and h["interval"]["blocks"] > 2
    assert h["documents"] == len(corpus.documents) > 1 and h["sample"]["kind"] == "spread"
    assert (h["window"], h["stride"], h["tokens_scored"]) == (64, 32, 2999)
    # the first 3000 tokens of the split are a few files, not the split: another number
    first = sliding_window_perplexity(model, torch.tensor(tok(corpus.text[:40000])["input_ids"][:3000]),
                                      WindowConfig(64, 32))
    assert abs(first.ppl - h["ppl"]) > 1e-3 * h["ppl"]
    assert model.training is False


def test_heldout_spec_and_short_split(default_model):
    model, tok = default_model
    with pytest.raises(TrainConfigError, match="held-out tokens"):
        HeldoutSpec(window=16, tokens=1)
    from adaptk.train import TrainConfig

    with pytest.raises(TrainConfigError, match="heldout_tokens must be >= 2"):
        TrainConfig(heldout_tokens=1)
    assert HeldoutSpec(window=128).resolved_stride == 64
    from adaptk.data import Corpus

    assert heldout_perplexity(model, tok, Corpus("in-memory", "test", "x = 1\n", 1), HeldoutSpec(window=64)) is None


def _files(tmp_path, text):
    paths = []
    for i in range(2):
        p = tmp_path / f"t{i}.txt"
        p.write_text(text if i == 0 else "".join(reversed(text.splitlines(keepends=True))))
        paths.append(str(p))
    return paths


@pytest.fixture
def text_file_run(tmp_path, tiny_cfg, tiny_text):
    return train(tiny_cfg(text=None, text_files=tuple(_files(tmp_path, tiny_text)), out=tmp_path / "run", heldout_tokens=200))


def test_card_reports_valid_and_test_on_the_spread_sample(text_file_run):
    out = text_file_run
    s = json.loads((out / SUMMARY_FILE).read_text())
    for split in ("valid", "test"):
        h = s["heldout"][split]
        assert h["corpus"] == "text-file" and h["split"] == split and h["sample"]["tokens"] == 200
        assert s[f"{split}_ppl"] == h["ppl"] and s[f"{split}_loss"] == h["loss"]
    # the saved model gives the card's numbers
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    corpora = heldout_corpora(None, s["config"]["text_files"])
    again = heldout_perplexity(model, tok, corpora["test"], HeldoutSpec(window=16, tokens=200))
    assert again["ppl"] == pytest.approx(s["test_ppl"], rel=1e-5)
    assert s["routing_eval"]["tokens"] > 0 and s["routing_eval"]["ppl"] > 1
    card = (out / "README.md").read_text()
    assert card == render_card(s)
    assert f"| test (`text-file:test`, spread sample) | {s['test_loss']:.3f} | {s['test_ppl']:.2f} |" in card
    assert "spread sample" in card and "window 16, stride 8" in card


def test_in_memory_run_has_no_test_split(tiny_cfg):
    out = train(tiny_cfg())
    s = json.loads((out / SUMMARY_FILE).read_text())
    assert s["heldout"]["test"] is None and s["test_ppl"] is None and s["valid_ppl"] == s["heldout"]["valid"]["ppl"]
    assert "| test | - | - | no test split |" in (out / "README.md").read_text()
    with pytest.raises(TrainConfigError, match="in-memory text"):
        refresh_card(out)


def test_refresh_card_recomputes_an_old_summary(text_file_run):
    out = text_file_run
    new = json.loads((out / SUMMARY_FILE).read_text())
    old = {k: v for k, v in new.items() if k not in ("heldout", "test_loss", "test_ppl", "routing_eval", "vocab_size",
                                                      "resumed")}
    old.update(valid_loss=2.5, valid_ppl=math.exp(2.5))
    old["data"] = json.loads(json.dumps(new["data"]))
    old["data"]["valid"]["tokens_evaluated"] = 120
    (out / SUMMARY_FILE).write_text(json.dumps(old))
    s = refresh_card(out, tokens=200)
    assert s["routing_eval"]["tokens"] == 120 and s["routing_eval"]["ppl"] == pytest.approx(math.exp(2.5))
    assert "tokens_evaluated" not in s["data"]["valid"]
    for split in ("valid", "test"):
        assert s[f"{split}_ppl"] == pytest.approx(new[f"{split}_ppl"], rel=1e-5)
    assert json.loads((out / SUMMARY_FILE).read_text()) == s
    assert (out / "README.md").read_text() == render_card(s)


def test_refresh_card_refuses_foreign_files_and_another_text(text_file_run):
    out = text_file_run
    before = (out / SUMMARY_FILE).read_text()
    (out / "README.md").write_text("# my notes\n")
    with pytest.raises(OutputExistsError, match="not an adaptk model card"):
        refresh_card(out, tokens=200)
    assert (out / SUMMARY_FILE).read_text() == before and (out / "README.md").read_text() == "# my notes\n"
    s = json.loads(before)
    s["data"]["valid"]["sha256"] = "0" * 64
    (out / SUMMARY_FILE).write_text(json.dumps(s))
    with pytest.raises(TrainConfigError, match="not the one this model was trained with"):
        refresh_card(out, tokens=200)
    (out / SUMMARY_FILE).write_text("{}")
    with pytest.raises(TrainConfigError, match="not an `adaptk train` summary"):
        refresh_card(out)

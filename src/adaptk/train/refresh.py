"""Recompute the held-out numbers of an existing ``adaptk train`` folder (weights unchanged).

``refresh_card(folder)`` loads the saved model and tokenizer, draws the held-out spread samples of
``adaptk.train.heldout`` from the corpus the summary names, and rewrites ``train_summary.json``
(``heldout``, ``valid_``/``test_`` loss and perplexity) and the model card ``README.md`` from it. A
summary written before the held-out sample keeps its training-time evaluation under
``routing_eval``. Both files are written atomically (``adaptk.outputs.write_file``), and only
when they are recognisably ``adaptk train``'s.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from adaptk.data.corpus import load_corpus, text_file_splits
from adaptk.outputs import check_file, json_is_own, write_file
from adaptk.train.card import CARD_FILE, SUMMARY_FILE, render_card, with_heldout
from adaptk.train.errors import TrainConfigError
from adaptk.train.heldout import CARD_TOKENS, HeldoutSpec, heldout_corpora, heldout_results

log = logging.getLogger(__name__)
KIND = "model card"


def _is_summary(d: dict) -> bool:
    return isinstance(d, dict) and "preset" in d and "config" in d and "valid_routing" in d


def _is_card(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")  # unreadable: not ours (check_file catches it)
    return text.startswith("---\nlibrary_name: transformers") and "Trained from scratch with `adaptk train`" in text


def read_summary(folder: Path) -> dict:
    path = folder / SUMMARY_FILE
    try:
        s = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainConfigError(f"{path} cannot be read as an `adaptk train` summary ({exc}); pass a folder "
                               "`adaptk train` wrote") from None
    if not _is_summary(s):
        raise TrainConfigError(f"{path} is not an `adaptk train` summary (no preset/config/valid_routing); pass a "
                               "folder `adaptk train` wrote")
    return s


def upgrade_summary(s: dict, vocab_size: int) -> dict:
    """A summary of any earlier version in today's shape: the training-time evaluation under
    ``routing_eval`` (from the old ``valid_loss``/``valid_ppl``/``tokens_evaluated``) and the
    model's vocabulary size."""
    s = json.loads(json.dumps(s))
    valid = s["data"]["valid"]
    if "routing_eval" not in s:
        s["routing_eval"] = {"what": "the first windows of the valid text, native top-k",
                             "tokens": valid.get("tokens_evaluated"), "loss": s.get("valid_loss"),
                             "ppl": s.get("valid_ppl")}
    valid.pop("tokens_evaluated", None)
    s.setdefault("vocab_size", vocab_size)
    return s


def _check_valid_text(s: dict) -> None:
    """Refuse when this machine's valid text is not the one the model was trained with (the stdlib
    corpus depends on the Python version)."""
    cfg = s["config"]
    here = (text_file_splits(list(cfg["text_files"]), "valid") if cfg["text_files"]
            else load_corpus(cfg["corpus"], "valid")).sha256
    recorded = s["data"]["valid"]["sha256"]
    if here != recorded:
        python = (s.get("environment") or {}).get("python", "?")
        raise TrainConfigError(f"the valid text here (sha256 {here[:12]}...) is not the one this model was trained "
                               f"with ({recorded[:12]}...): the stdlib corpus depends on the Python version (trained "
                               f"with Python {python}); run with that version, or the same data folder")


def refresh_card(folder: str | Path, tokens: int = CARD_TOKENS) -> dict:
    """Recompute ``folder``'s held-out valid/test perplexity and rewrite its summary and card;
    returns the new summary. ``TrainConfigError`` for a run on in-memory text (its splits cannot be
    rebuilt) or on a valid text other than this machine's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    s = read_summary(folder)
    cfg = s["config"]
    if cfg.get("text") is not None:
        raise TrainConfigError(f"{folder} was trained on in-memory text; its valid and test splits cannot be "
                               "rebuilt here")
    _check_valid_text(s)
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    corpora = heldout_corpora(None if cfg["text_files"] else cfg["corpus"], cfg["text_files"])
    heldout = heldout_results(model, tok, corpora, HeldoutSpec(window=int(cfg["seq_len"]), tokens=tokens))
    s = with_heldout(upgrade_summary(s, model.config.vocab_size), heldout)
    card = render_card(s)  # before any write: a summary it cannot render leaves both files as they were
    check_file(folder / CARD_FILE, KIND, _is_card, flag="folder")
    write_file(folder / SUMMARY_FILE, json.dumps(s, indent=2) + "\n", KIND, json_is_own(_is_summary),
               flag="folder")
    write_file(folder / CARD_FILE, card, KIND, _is_card, flag="folder")
    log.info("held-out perplexity of %s: valid %s, test %s", folder, s["valid_ppl"], s["test_ppl"])
    return s

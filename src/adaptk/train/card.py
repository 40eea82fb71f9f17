"""The model card (README.md) and ``train_summary.json`` written next to a trained model."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import torch

from adaptk.data.corpus import CORPORA
from adaptk.train.heldout import HELDOUT_SPLITS
from adaptk.train.presets import PRESETS

SUMMARY_FILE = "train_summary.json"
CARD_FILE = "README.md"


def active_parameters(model) -> tuple[int, int]:
    """(total, active per token) parameter counts; active counts native-k of N routed experts."""
    total = sum(p.numel() for p in model.parameters())
    cfg = model.config
    n = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None)
    k = getattr(cfg, "num_experts_per_tok", None)
    if not n or not k:
        return total, total
    routed = sum(p.numel() for name, p in model.named_parameters()
                 if ".experts." in name and "shared_expert" not in name)
    return total, total - routed + routed * k // n


def summarise(cfg, model, texts, history, valid, warnings, train_time, train_tokens,
              resumed: list[dict] | None = None, tokens_seen: int | None = None,
              heldout: dict[str, dict | None] | None = None) -> dict:
    """The run summary. ``valid``: the training-time evaluation (the first windows of the valid
    text; its routing statistics), kept under ``routing_eval``. ``heldout``: ``{"valid", "test"}``
    of ``adaptk.train.heldout.heldout_results`` (the spread samples), whose perplexities are the
    card's ``valid_ppl`` / ``test_ppl``. ``resumed``: one ``{"step", "changed"}`` record per
    ``--resume`` (the values that differed from the checkpoint's, ``"unknown"`` for a checkpoint
    that did not record them); ``config`` holds the values of the last segment. ``tokens_seen``:
    counted over all segments (default: steps x batch x sequence length)."""
    total, active = active_parameters(model)
    tail = history[-50:]
    train_loss = sum(tail) / max(len(tail), 1)
    layers = valid.get("layers", [])
    s = {
        "preset": cfg.preset,
        "architecture": type(model).__name__,
        "description": PRESETS[cfg.preset].description,
        "parameters": total,
        "active_parameters": active,
        "vocab_size": model.config.vocab_size,
        "config": cfg.to_dict(),
        "data": {
            "train": {"name": texts.train.name, "sha256": texts.train.sha256, "chars": len(texts.train.text),
                      "tokens": train_tokens, "files": texts.train.sources},
            "valid": {"name": texts.valid.name, "sha256": texts.valid.sha256, "chars": len(texts.valid.text)},
        },
        "steps": len(history),
        "tokens_seen": len(history) * cfg.batch_size * cfg.seq_len if tokens_seen is None else tokens_seen,
        "resumed": list(resumed or []),
        "train_time_s": round(train_time, 1),
        "final_train_loss": train_loss,
        "final_train_ppl": math.exp(train_loss),
        "routing_eval": {"what": "the first windows of the valid text, native top-k", "tokens": valid["tokens"],
                         "loss": valid["loss"], "ppl": valid["ppl"]},
        "valid_routing": [
            {k: h[k] for k in ("entropy_mean", "entropy_hist", "load_entropy", "expert_load", "load_cv",
                               "load_max_over_mean", "dead_fraction", "expert_loss")}
            for h in layers
        ],
        "collapse_warnings": len(warnings),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads()},
    }
    return with_heldout(s, heldout or {})


def with_heldout(summary: dict, heldout: dict[str, dict | None]) -> dict:
    """``summary`` with the held-out results set: ``heldout`` and the ``valid_``/``test_`` loss and
    perplexity (None for a split without a result)."""
    s = dict(summary)
    s["heldout"] = {split: heldout.get(split) for split in HELDOUT_SPLITS}
    for split in HELDOUT_SPLITS:
        h = s["heldout"][split]
        s[f"{split}_loss"] = h["loss"] if h else None
        s[f"{split}_ppl"] = h["ppl"] if h else None
    return s


def _routing_table(layers: list[dict]) -> str:
    if not layers:
        return "Dense model: no routing.\n"
    rows = ["| layer | mean normalised routing entropy | normalised load entropy | load CV | max/mean load | dead experts |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, h in enumerate(layers):
        rows.append(f"| {i} | {h['entropy_mean']:.3f} | {h['load_entropy']:.3f} | {h['load_cv']:.3f} | "
                    f"{h['load_max_over_mean']:.2f} | {h['dead_fraction']:.0%} |")
    return "\n".join(rows) + "\n"


def _resume_lines(resumed: list[dict]) -> str:
    """Recipe lines of the resumes that changed values (none when every resume kept the recipe)."""
    lines = []
    for r in resumed:
        if r["changed"] == "unknown":
            lines.append(f"- resumed at step {r['step']} from a checkpoint that did not record its config "
                         "(the recipe before it is unknown)\n")
        elif r["changed"]:
            what = ", ".join(f"{k} {v['checkpoint']} -> {v['given']}" for k, v in r["changed"].items())
            lines.append(f"- resumed at step {r['step']} with changed values: {what} (above: the final values)\n")
    return "".join(lines)


def _heldout_rows(s: dict) -> str:
    rows = []
    for split in HELDOUT_SPLITS:
        h = (s.get("heldout") or {}).get(split)
        if h:
            rows.append(f"| {split} (`{h['corpus']}:{split}`, spread sample) | {h['loss']:.3f} | {h['ppl']:.2f} | "
                        f"[{h['ppl_lo']:.2f}, {h['ppl_hi']:.2f}] |\n")
        else:
            rows.append(f"| {split} | - | - | no {split} split |\n")
    return "".join(rows)


def _heldout_note(s: dict) -> str:
    done = [h for h in (s.get("heldout") or {}).values() if h]
    if not done:
        return ""
    h = done[0]
    sizes = " and ".join(f"{x['sample']['tokens']:,} {x['split']}" for x in done)
    docs = ", ".join(f"{x['documents']} of `{x['corpus']}:{x['split']}`" for x in done)
    note = (f"Valid and test: a spread sample (`adaptk.data.sample`, the sample `adaptk evaluate --sample spread` "
            f"draws) of {sizes} tokens (at most {h['sample']['budget']:,} per split), shared evenly over every "
            f"document of the whole split ({docs}) in pieces of at most {h['sample']['piece']:,} tokens; "
            f"perplexity by the sliding window (window {h['window']}, stride {h['stride']}); 95% block bootstrap "
            f"interval over the windows.")
    if h["corpus"] in CORPORA:
        note += (f" `adaptk evaluate --model PATH --corpus {h['corpus']} --split test --eval-tokens "
                 f"{h['sample']['budget']} --window {h['window']} --stride {h['stride']}` scores the same test "
                 f"tokens (its native top-k row).")
    return note + "\n"


def _routing_what(s: dict) -> str:
    r = s.get("routing_eval")
    return f"the first {r['tokens']:,} valid tokens" if r else "valid split"


def render_card(s: dict) -> str:
    """The model card (README.md) of a summary (``summarise``'s dict)."""
    c, cfg = s["config"]["controls"], s["config"]
    routing = s.get("routing_eval")
    routing_row = (f"| valid, first {routing['tokens']:,} tokens (training-time check) | {routing['loss']:.3f} | "
                   f"{routing['ppl']:.2f} | |\n") if routing else ""
    return f"""---
library_name: transformers
tags: [adaptk, mixture-of-experts, causal-lm]
---

# adaptk `{s['preset']}` trained on `{s['data']['train']['name']}`

{s['description']}. Trained from scratch with `adaptk train`; loads with
`AutoModelForCausalLM.from_pretrained(path)` and `AutoTokenizer.from_pretrained(path)`.
Parameters: {s['parameters']:,} total, {s['active_parameters']:,} active per token.

## Recipe

- steps {s['steps']}, batch {cfg['batch_size']} x {cfg['seq_len']} tokens ({s['tokens_seen']:,} tokens seen), AdamW lr {cfg['lr']}
  (warm-up {cfg['warmup_steps']}, cosine to 10%), weight decay {cfg['weight_decay']} (none on router weights), seed {cfg['seed']}
- byte-level BPE tokenizer, {s['data']['train']['chars']:,} training characters, vocabulary {s.get('vocab_size') or cfg['vocab_size']}
- routing controls: balance loss {c['balance_coef']}, z-loss {c['z_loss_coef']}, entropy {c['entropy_coef']},
  aux-free bias speed {c['aux_free_bias_speed']}, jitter {c['jitter']}, logit noise {c['logit_noise']},
  temperature {c['temperature_start']} -> {c['temperature_end']}, dense steps {c['dense_steps']}, sparsify steps {c['sparsify_steps']},
  capacity factor {c['capacity_factor'] or 'unlimited'}
- training time {s['train_time_s']:.0f} s on {s['environment']['threads']} CPU threads
{_resume_lines(s.get('resumed') or [])}
## Data

- train: `{s['data']['train']['name']}`, sha256 `{s['data']['train']['sha256']}` ({s['data']['train']['tokens']:,} tokens)
- valid: `{s['data']['valid']['name']}`, sha256 `{s['data']['valid']['sha256']}`

## Results

| | loss | perplexity | 95% interval |
| --- | ---: | ---: | --- |
| train (mean of last 50 steps) | {s['final_train_loss']:.3f} | {s['final_train_ppl']:.2f} | |
{_heldout_rows(s)}{routing_row}
{_heldout_note(s)}
## Routing statistics ({_routing_what(s)}, native top-k)

{_routing_table(s['valid_routing'])}
Collapse warnings during training: {s['collapse_warnings']}. Full per-step health: `health.jsonl`.
"""


def write_card(out: Path, cfg, model, texts, history, valid, warnings, train_time, train_tokens,
               resumed: list[dict] | None = None, tokens_seen: int | None = None,
               heldout: dict[str, dict | None] | None = None) -> dict:
    s = summarise(cfg, model, texts, history, valid, warnings, train_time, train_tokens, resumed, tokens_seen,
                  heldout)
    (out / SUMMARY_FILE).write_text(json.dumps(s, indent=2) + "\n")
    (out / CARD_FILE).write_text(render_card(s))
    return s

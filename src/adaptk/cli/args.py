"""Argument helpers shared by the calibrate/evaluate CLIs (text sources, budgets, model)."""

from __future__ import annotations

import argparse

from adaptk.errors import AdaptkError

BUDGET_SCOPES = ("heldout", "calibration")  # adaptk.calibrate.transfer.BUDGET_SCOPES (checked by a test)


def percent(value: str) -> float:
    """'1%' -> 0.01, '0.01' -> 0.01."""
    v = value.strip()
    try:
        return float(v[:-1]) / 100.0 if v.endswith("%") else float(v)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number or a percentage like 1%, got {value!r}") from exc


def int_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from exc


def float_list(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from exc


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="'default' (the embedded default model, the default), a local model folder, "
                                   "or a hub name (namespace/name; with HF_HUB_OFFLINE=1 only from the local cache)")
    p.add_argument("--threads", default="auto",
                   help="torch CPU threads, or 'auto': 1 when the machine is already busy (oversubscribed "
                        "OpenMP threads can be 10x slower), else torch's default")


def add_text_args(p: argparse.ArgumentParser, prefix: str, split: str, what: str) -> None:
    g = p.add_argument_group(f"{what} text (one of)")
    g.add_argument(f"--{prefix}corpus", default=None, help="built-in corpus: stdlib, gutenberg, wikitext-2 (default stdlib)")
    g.add_argument(f"--{prefix}split", default=split, help=f"corpus split (default {split})")
    g.add_argument(f"--{prefix}text-file", default=None, help="a local text file")
    g.add_argument(f"--{prefix}dataset", default=None, help="a Hugging Face datasets id (needs `datasets`)")


def add_calibration_args(p: argparse.ArgumentParser, default_strategy: str) -> None:
    from adaptk.rules import strategy_names

    g = p.add_argument_group("calibration")
    g.add_argument("--strategy", default=default_strategy, choices=strategy_names())
    g.add_argument("--k-values", type=int_list, help="entropy rules: k values, e.g. 1,2 (default 1..native k)")
    g.add_argument("--alphas", type=float_list, help="theory: θ_i = α_i·log N, e.g. 0.6")
    g.add_argument("--target-avg-k", type=float)
    g.add_argument("--target-fraction", type=percent, help="target average k as a fraction of native k, e.g. 75%%")
    g.add_argument("--target-distribution", type=float_list, help="percentile: share of tokens per k value")
    g.add_argument("--per-layer", action="store_true", help="fit per layer instead of globally")
    g.add_argument("--max-ppl-increase", type=percent, help="quality: e.g. 1%% (relative)")
    g.add_argument("--max-kl", type=float, help="quality: mean KL to the full model (nats/token)")
    g.add_argument("--max-passes", type=int, default=24, help="quality: bound on forward passes")
    g.add_argument("--confidence", type=_confidence, default=0.95,
                   help="quality: accept a policy only if the upper one-sided confidence bound of its "
                        "quality loss meets the budget (default 0.95; 'none': the point estimate)")
    g.add_argument("--budget-scope", choices=BUDGET_SCOPES, default="heldout",
                   help="quality: where the budget is to hold. 'heldout' (default): on unseen documents of the "
                        "calibration text's kind, by a margin fitted from a leave-documents-out cross-validation "
                        "(one more search per fold); 'calibration': on the calibration tokens only")
    g.add_argument("--heldout-folds", type=int, default=4,
                   help="quality, --budget-scope heldout: folds of documents of the cross-validation (default 4)")


def _confidence(text: str) -> float | None:
    if text.strip().lower() in ("none", "0", "off"):
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--confidence takes a number in [0.5, 1) or 'none', got {text!r}") from exc


def calibrate_config(args, **overrides):
    from adaptk.calibrate import CalibrateConfig

    kw = dict(strategy=args.strategy, k_values=args.k_values, alphas=args.alphas, target_avg_k=args.target_avg_k,
              target_fraction=args.target_fraction, target_distribution=args.target_distribution,
              per_layer=args.per_layer, max_ppl_increase=args.max_ppl_increase, max_kl=args.max_kl,
              max_passes=args.max_passes, confidence=args.confidence, budget_scope=args.budget_scope,
              heldout_folds=args.heldout_folds)
    if kw["strategy"] == "quality" and kw["max_ppl_increase"] is None and kw["max_kl"] is None:
        kw["max_ppl_increase"] = 0.01
    kw.update(overrides)
    return CalibrateConfig(**kw)


def add_sample_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", choices=("first", "spread"), default="spread",
                   help="which tokens of a text: 'spread' (default) draws pieces across every file, book or article "
                        "of the split (an even share each, deterministic); 'first' takes its first tokens")


def piece_tokens(window: int) -> int:
    """Tokens per piece of a spread sample (``adaptk.data.sample.piece_tokens``)."""
    from adaptk.data.sample import piece_tokens as pieces

    return pieces(window)


def text_ids(args, prefix: str, tokenizer, tokens: int | None = None, piece: int = 1024):
    """Token ids [L] of the text an argument group names, and a description. With ``--sample
    spread`` and a ``tokens`` budget: a spread sample of that many tokens (pieces of at most
    ``piece`` tokens, ``adaptk.data.sample``); else the whole text's tokens in order."""
    ids, _, source = text_sample(args, prefix, tokenizer, tokens, piece)
    return ids, source


def text_sample(args, prefix: str, tokenizer, tokens: int | None = None, piece: int = 1024):
    """``text_ids`` and the document of each token [L] (None when the tokens are not drawn from
    separate documents: ``--sample first``, one text file or dataset)."""
    import torch

    from adaptk.data import spread_sample_documents
    from adaptk.loading.model import encode, load_documents, load_text

    a = lambda name: getattr(args, f"{prefix}{name}".replace("-", "_"))
    src = dict(corpus=a("corpus"), split=a("split"), text_file=a("text_file"), dataset=a("dataset"))
    documents = None
    if getattr(args, "sample", "first") == "spread" and tokens:
        docs, source = load_documents(**src)
        ids, labels = spread_sample_documents([encode(tokenizer, d).tolist() for d in docs], tokens, piece)
        ids = torch.tensor(ids, dtype=torch.long)
        if len(docs) > 1:
            source = f"{source} (spread over {len(docs)} documents)"
            documents = torch.tensor(labels, dtype=torch.long)
    else:
        text, source = load_text(**src)
        ids = encode(tokenizer, text)
    if ids.numel() < 2:
        raise AdaptkError(f"{source} holds {ids.numel()} tokens; give more text")
    return ids, documents, source


def set_threads(args) -> int:
    import logging
    import os

    import torch

    value = getattr(args, "threads", "auto") or "auto"
    if value == "auto":
        cpus = os.cpu_count() or 1
        busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= cpus - 0.5
        if busy:
            torch.set_num_threads(1)
            logging.getLogger(__name__).info("machine busy (load %.1f on %d CPUs): using 1 thread",
                                             os.getloadavg()[0], cpus)
    else:
        try:
            n = int(value)
        except ValueError as exc:
            raise AdaptkError(f"--threads must be an integer or 'auto', got {value!r}") from exc
        if n < 1:
            raise AdaptkError(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()

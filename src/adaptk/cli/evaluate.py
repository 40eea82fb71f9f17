"""``adaptk evaluate``: calibrate, evaluate and report. With no arguments it runs offline on the
embedded default model and the built-in stdlib corpus (calibrate on valid, evaluate on test)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adaptk.cli import args as C
    from adaptk.rules import default_sweep_names, sweep_names

    C.add_model_args(parser)
    C.add_text_args(parser, "", "test", "evaluation")
    C.add_text_args(parser, "calib-", "valid", "calibration (default: the evaluation corpus's valid split)")
    C.add_calibration_args(parser, "quality")
    C.add_sample_arg(parser)
    parser.add_argument("--policy", help="evaluate this policy file instead of calibrating")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a --policy file calibrated on another checkpoint (default: warn)")
    parser.add_argument("--calib-tokens", type=int, default=16384)
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--match-tokens", type=int, default=4096, help="calibration tokens per matched-k check")
    parser.add_argument("--rules", default=",".join(default_sweep_names()),
                        help=f"adaptive rules of the side-by-side sweep, from {','.join(sweep_names())}")
    parser.add_argument("--controls", default="random,oracle",
                        help="controls for each adaptive cell of the sweep, at the rule's measured per-layer k shares: "
                             "random (random tokens), oracle (analysis only); empty: none")
    parser.add_argument("--control-seeds", type=int, default=5, help="seeds of the random control (>= 2)")
    parser.add_argument("--control-rules", default="entropy_global,entropy_quality_alloc",
                        help="the sweep rules whose cells get controls (each costs 1 + seeds evaluation runs per "
                             "cell; default: the paper's rule and the quality-allocated one), or 'all'")
    parser.add_argument("--alphas-sweep", type=C.float_list, default=(0.3, 0.5, 0.7, 0.9),
                        help="α values of the threshold-sensitivity table")
    parser.add_argument("--window", type=int, default=None,
                        help="perplexity window (tokens; default 256, or the shorter length the model was trained at "
                             "when its folder records one)")
    parser.add_argument("--stride", type=int, default=None, help="perplexity stride (tokens; default half the window)")
    parser.add_argument("--sections", default="sensitivity,granularity,tokens,pareto",
                        help="extra tables to compute, comma-separated (empty: headline only); 'downstream' adds "
                             "multiple-choice accuracy at matched k on items of the evaluation text's test split")
    parser.add_argument("--downstream-items", type=int, default=200,
                        help="downstream: items built from the test split (spread over its documents)")
    parser.add_argument("--downstream-task", choices=("auto", "last_word", "next_line"), default="auto",
                        help="downstream: last-word choice (prose) or next-line choice (code); auto: next_line for "
                             "stdlib and .py files, else last_word")
    parser.add_argument("--fractions", type=C.float_list, default=(0.9, 0.75, 0.6),
                        help="Pareto budgets as fractions of native k")
    parser.add_argument("--match-on", choices=("calib", "eval"), default="eval",
                        help="match each rule's average k on the evaluation text (default: a compute-matched "
                             "comparison within 1%%; quality is never fit on it) or on calibration tokens")
    parser.add_argument("--interval", choices=("bootstrap", "block_se"), default="bootstrap",
                        help="95%% paired interval of every perplexity increase: a block bootstrap over the evaluation "
                             "windows (default, seeded) or the block standard error")
    parser.add_argument("--out", "-o", default="adaptk-report",
                        help="report folder: new, empty or an earlier adaptk report (only adaptk's files are replaced)")
    parser.add_argument("--overwrite", action="store_true",
                        help="also write into a --out folder adaptk did not write: same-named files are replaced, "
                             "nothing else in it is touched")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys
    import time

    from adaptk.calibrate import load_policy_file
    from adaptk.cli import args as C
    from adaptk.evaluate.pipeline import EvaluateConfig, run_evaluation
    from adaptk.evaluate.summary import short_table
    from adaptk.evaluate.sweep import SweepConfig
    from adaptk.loading.model import load_model_and_tokenizer
    from adaptk.measure import IntervalConfig, default_window
    from adaptk.report import write_report
    from adaptk.report.write import check_report_out

    t0 = time.perf_counter()
    check_report_out(args.out, args.overwrite)  # before loading the model: a bad --out fails in a second
    C.set_threads(args)
    sections = tuple(s for s in args.sections.split(",") if s.strip())
    cfg = EvaluateConfig(calib_tokens=args.calib_tokens, eval_tokens=args.eval_tokens, match_tokens=args.match_tokens,
                         window=args.window or 256, stride=args.stride or (args.window or 256) // 2,
                         sections=sections, match_on=args.match_on,
                         calibration=C.calibrate_config(args), alphas=tuple(args.alphas_sweep),
                         intervals=IntervalConfig(method=args.interval),
                         sweep=SweepConfig(fractions=tuple(args.fractions),
                                           rules=tuple(r for r in args.rules.split(",") if r),
                                           controls=tuple(c for c in args.controls.split(",") if c),
                                           control_seeds=args.control_seeds,
                                           control_rules=None if args.control_rules == "all" else
                                           tuple(r for r in args.control_rules.split(",") if r)))
    model, tok, path = load_model_and_tokenizer(args.model)
    if args.window is None:
        window = default_window(model, cfg.window)
        cfg = dataclasses.replace(cfg, window=window, stride=args.stride or window // 2)
    policy_file = load_policy_file(args.policy, model, strict=args.strict) if args.policy else None
    piece = C.piece_tokens(cfg.window)
    own_calib = any(getattr(args, f"calib_{k}") for k in ("corpus", "text_file", "dataset"))
    one_file = bool(args.text_file) and not own_calib
    eval_ids, eval_src = C.text_ids(args, "", tok, args.eval_tokens + (args.calib_tokens if one_file else 0), piece)
    calib_docs = None
    if own_calib:
        calib_ids, calib_docs, calib_src = C.text_sample(args, "calib_", tok, args.calib_tokens, piece)
    elif one_file:  # one file: calibrate on its first half, evaluate on its second half (spread: disjoint pieces)
        half = eval_ids.numel() // 2
        calib_ids, eval_ids = eval_ids[:half], eval_ids[half:]
        calib_src, eval_src = f"{eval_src} (first half)", f"{eval_src} (second half)"
    else:  # the same corpus or dataset, its calibration split
        args.calib_corpus, args.calib_dataset = args.corpus, args.dataset
        calib_ids, calib_docs, calib_src = C.text_sample(args, "calib_", tok, args.calib_tokens, piece)
    meta = {"model_name": path, "calib_source": calib_src, "eval_source": eval_src, "sample": args.sample,
            "command": "adaptk evaluate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["evaluate"] else None}
    task = downstream_task(args, tok, cfg.window) if "downstream" in sections else None
    results = run_evaluation(model, calib_ids, eval_ids, cfg, meta=meta, progress=not args.no_progress,
                             policy_file=policy_file, calib_documents=calib_docs, downstream=task)
    out = write_report(results, args.out, overwrite=args.overwrite)
    print(short_table(results))
    print(f"report: {out}/report.html (JSON: {out}/results.json) in {time.perf_counter() - t0:.1f} s")
    return 0


def downstream_task(args: argparse.Namespace, tokenizer, window: int):
    """The downstream items of the evaluation text's test split (a text file: its last 5% of lines)."""
    from adaptk.data import text_file_splits
    from adaptk.data.cloze import task_for
    from adaptk.errors import AdaptkError
    from adaptk.evaluate.downstream import build_task
    from adaptk.loading.model import encode, load_documents

    if args.downstream_items < 1:
        raise AdaptkError(f"--downstream-items must be >= 1, got {args.downstream_items}")
    if args.text_file:
        docs, source = text_file_splits([args.text_file], "test").documents, f"file:{args.text_file} (test part)"
        auto = "next_line" if str(args.text_file).endswith(".py") else "last_word"
    else:
        docs, source = load_documents(corpus=args.corpus, split="test", dataset=args.dataset)
        auto = "last_word" if args.dataset else task_for(args.corpus)
    task = auto if args.downstream_task == "auto" else args.downstream_task
    return build_task(docs, task, lambda s: encode(tokenizer, s).tolist(), window=window,
                      n_items=args.downstream_items, source=source)

"""``adaptk monitor``: per-layer routing health of a model on a text file, and drift against a
saved baseline.

    adaptk monitor --model PATH --text-file in_domain.txt --save-baseline base.json
    adaptk monitor --model PATH --text-file new.txt --baseline base.json
"""

from __future__ import annotations

import argparse

EXIT_DRIFT = 3  # --fail-on-drift and at least one layer shifted

EXIT_CODES = ("exit codes: 0 done (and, with --fail-on-drift, no layer shifted); 2 a usage or input error "
              "(also --fail-on-drift when a layer had too few tokens to be judged); 3 --fail-on-drift and at "
              "least one layer shifted against --baseline; 130 interrupted")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXIT_CODES
    parser.add_argument("--model", required=True,
                        help="model folder (from_pretrained-loadable, with its tokenizer), or 'default'")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text-file", help="UTF-8 text to route through the model")
    source.add_argument("--corpus", choices=["stdlib", "gutenberg", "wikitext-2"],
                        help="a built-in corpus instead of --text-file (with --split)")
    parser.add_argument("--split", default="valid", choices=["train", "valid", "test"],
                        help="split of --corpus (default valid)")
    parser.add_argument("--baseline", help="score the text against this baseline JSON (which layers shifted)")
    parser.add_argument("--fail-on-drift", action="store_true",
                        help=f"with --baseline: exit {EXIT_DRIFT} when any layer shifted (to gate a deployment)")
    parser.add_argument("--save-baseline", metavar="OUT.json",
                        help="save this text's routing profile as a baseline (an existing file only if it is an "
                             "adaptk baseline)")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --save-baseline: replace the file even if it is not an adaptk baseline")
    parser.add_argument("--policy", help="policy JSON file: patch the model with it before monitoring")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a --policy file calibrated on another checkpoint (default: warn)")
    parser.add_argument("--window", type=int, default=None,
                        help="tokens per sequence chunk (default 256, or the shorter length the model was trained at "
                             "when its folder records one)")
    parser.add_argument("--batch-size", type=int, default=8, help="chunks per forward batch (default 8)")
    parser.add_argument("--max-tokens", type=int, default=None, help="route at most this many tokens")
    parser.add_argument("--capacity-factor", type=float, default=1.25, help="for overflow rates (default 1.25)")
    parser.add_argument("--bins", type=int, default=32, help="entropy histogram bins (default 32)")
    parser.add_argument("--psi-threshold", type=float, default=0.25, help="PSI above which a layer shifted")
    parser.add_argument("--js-threshold", type=float, default=0.05, help="JS (bits) above which a layer shifted")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _load_policy(path: str):
    import json
    from pathlib import Path

    from adaptk.errors import PolicyError
    from adaptk.routing import policy_from_dict

    if Path(path).is_dir():
        raise PolicyError(f"--policy {path} is a folder; pass a policy file (the JSON file written by "
                          "`adaptk calibrate --out FILE`, or a policy's to_dict() as JSON)")
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}") from exc
    if isinstance(data, dict) and "version" in data:
        return path  # an `adaptk calibrate` policy file: validated against the model once it is loaded
    return policy_from_dict(data)


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    from adaptk.loading.modelspec import resolve_model
    from adaptk.monitor.drift import Baseline, DriftConfig, score_drift
    from adaptk.monitor.errors import MonitorError
    from adaptk.monitor.monitor import MonitorConfig
    from adaptk.monitor.runner import monitor_text

    log = logging.getLogger("adaptk.cli.monitor")
    if (args.window is not None and args.window < 2) or args.batch_size < 1:
        raise MonitorError("--window must be >= 2 and --batch-size >= 1")
    if args.fail_on_drift and not args.baseline:
        raise MonitorError("--fail-on-drift needs --baseline BASELINE.json to compare against")
    drift_cfg = DriftConfig(psi_threshold=args.psi_threshold, js_threshold=args.js_threshold)
    baseline = Baseline.load(args.baseline) if args.baseline else None  # reject bad files before loading a model
    resolve_model(args.model)  # a bad --model path fails before the text is read
    if args.save_baseline:
        Baseline.check_save(args.save_baseline, args.overwrite)  # and a bad output path
    if args.corpus:
        from adaptk.data.corpus import load_text

        text, source = load_text(args.corpus, args.split), f"{args.corpus}:{args.split}"
    else:
        from adaptk.data.text import read_text_file

        text, source = read_text_file(args.text_file), str(args.text_file)
    policy = _load_policy(args.policy) if args.policy else None
    report = monitor_text(
        args.model, text, policy=policy, strict=args.strict, window=args.window, batch_size=args.batch_size,
        max_tokens=args.max_tokens, config=MonitorConfig(bins=args.bins, capacity_factor=args.capacity_factor),
    )
    out: dict = {"stats": report.to_dict()}
    drift = score_drift(baseline, report, drift_cfg) if baseline is not None else None
    if drift is not None:
        out["drift"] = drift.to_dict()
    if args.save_baseline:
        Baseline.from_report(report, source=source).save(args.save_baseline, overwrite=args.overwrite)
        log.info("baseline saved to %s", args.save_baseline)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"routing of {report.tokens} tokens through {report.fingerprint['architecture']} "
              f"({report.fingerprint['num_moe_layers']} MoE layers)")
        print(report.table())
        if drift is not None:
            print(f"\ndrift against baseline {args.baseline}:")
            print(drift.table())
        if args.save_baseline:
            print(f"\nbaseline saved to {args.save_baseline}")
    if args.fail_on_drift:
        return _drift_gate(drift, args.baseline)
    return 0


def _drift_gate(drift, baseline_path: str) -> int:
    """--fail-on-drift: EXIT_DRIFT when a layer shifted; a layer that could not be judged is an
    error (a gate must not pass on too little text)."""
    import sys

    from adaptk.monitor.errors import MonitorError

    if drift.shifted:
        print(f"adaptk monitor: routing drifted against {baseline_path} in layers {drift.shifted_layers}",
              file=sys.stderr)
        return EXIT_DRIFT
    unjudged = [d.layer for d in drift.layers if not d.judged]
    if unjudged:
        raise MonitorError(f"--fail-on-drift: layers {unjudged} had fewer than {drift.config.min_tokens} tokens "
                           "(here or in the baseline) and could not be judged; pass more text (raise --max-tokens)")
    return 0

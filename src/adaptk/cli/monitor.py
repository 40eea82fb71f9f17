"""``adaptk monitor``: per-layer routing health of a model on a text file, and drift against a
saved baseline.

    adaptk monitor --model PATH --text-file in_domain.txt --save-baseline base.json
    adaptk monitor --model PATH --text-file new.txt --baseline base.json
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="model folder (from_pretrained-loadable, with its tokenizer), or 'default'")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text-file", help="UTF-8 text to route through the model")
    source.add_argument("--corpus", choices=["stdlib", "gutenberg", "wikitext-2"],
                        help="a built-in corpus instead of --text-file (with --split)")
    parser.add_argument("--split", default="valid", choices=["train", "valid", "test"],
                        help="split of --corpus (default valid)")
    parser.add_argument("--baseline", help="score the text against this baseline JSON (which layers shifted)")
    parser.add_argument("--save-baseline", metavar="OUT.json",
                        help="save this text's routing profile as a baseline (an existing file only if it is an "
                             "adaptk baseline)")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --save-baseline: replace the file even if it is not an adaptk baseline")
    parser.add_argument("--policy", help="policy JSON file: patch the model with it before monitoring")
    parser.add_argument("--window", type=int, default=256, help="tokens per sequence chunk (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="chunks per forward batch (default 8)")
    parser.add_argument("--max-tokens", type=int, default=None, help="route at most this many tokens")
    parser.add_argument("--capacity-factor", type=float, default=1.25, help="for overflow rates (default 1.25)")
    parser.add_argument("--bins", type=int, default=32, help="entropy histogram bins (default 32)")
    parser.add_argument("--psi-threshold", type=float, default=0.25, help="PSI above which a layer shifted")
    parser.add_argument("--js-threshold", type=float, default=0.05, help="JS (bits) above which a layer shifted")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _model_path(spec: str):
    from pathlib import Path

    from adaptk.monitor.errors import MonitorError

    if spec == "default":
        path = Path(__file__).resolve().parent.parent / "assets" / "default-model"
    else:
        path = Path(spec)
    if not (path / "config.json").is_file():
        raise MonitorError(f"{path} is not a model folder (no config.json); pass a from_pretrained folder")
    return path


def _load_policy(path: str):
    import json

    from adaptk.errors import PolicyError
    from adaptk.routing import policy_from_dict

    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, json.JSONDecodeError) as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}") from exc
    if isinstance(data, dict) and "version" in data:
        return path  # an `adaptk calibrate` policy file: validated against the model once it is loaded
    return policy_from_dict(data)


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    from adaptk.monitor.drift import Baseline, DriftConfig, score_drift
    from adaptk.monitor.errors import MonitorError
    from adaptk.monitor.monitor import MonitorConfig
    from adaptk.monitor.runner import monitor_text

    log = logging.getLogger("adaptk.cli.monitor")
    if args.window < 2 or args.batch_size < 1:
        raise MonitorError("--window must be >= 2 and --batch-size >= 1")
    drift_cfg = DriftConfig(psi_threshold=args.psi_threshold, js_threshold=args.js_threshold)
    baseline = Baseline.load(args.baseline) if args.baseline else None  # reject bad files before loading a model
    if args.save_baseline:
        Baseline.check_save(args.save_baseline, args.overwrite)  # and a bad output path
    if args.corpus:
        from adaptk.data.corpus import load_text

        text, source = load_text(args.corpus, args.split), f"{args.corpus}:{args.split}"
    else:
        try:
            text, source = open(args.text_file, encoding="utf-8").read(), str(args.text_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise MonitorError(f"cannot read --text-file {args.text_file}: {exc}") from exc
    policy = _load_policy(args.policy) if args.policy else None
    report = monitor_text(
        _model_path(args.model), text, policy=policy, window=args.window, batch_size=args.batch_size,
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
    return 0

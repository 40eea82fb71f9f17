"""``adaptk calibrate``: fit a routing policy for a model on some text and write a policy file."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adaptk.cli import args as C

    C.add_model_args(parser)
    C.add_text_args(parser, "", "valid", "calibration")
    C.add_calibration_args(parser, "percentile")
    C.add_sample_arg(parser)
    parser.add_argument("--max-tokens", type=int, default=16384, help="router statistics token cap")
    parser.add_argument("--quality-tokens", type=int, default=4096, help="tokens per verification/quality pass")
    parser.add_argument("--window", type=int, default=None,
                        help="tokens per forward sequence (default 512, or the shorter length the model was trained "
                             "at when its folder records one)")
    parser.add_argument("--no-verify", action="store_true", help="skip the patched-run check of the average k")
    parser.add_argument("--out", "-o", default="adaptk-policy.json",
                        help="policy file to write (an existing file only if it is an adaptk policy file)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even if it is not an adaptk policy file")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from adaptk.calibrate import calibrate, check_policy_out, quality_summary, save_policy_file
    from adaptk.cli import args as C
    from adaptk.loading.model import load_model_and_tokenizer
    from adaptk.measure import default_window

    check_policy_out(args.out, args.overwrite)  # before loading the model: a bad --out fails in a second
    C.set_threads(args)
    cfg = C.calibrate_config(args, max_tokens=args.max_tokens, quality_tokens=args.quality_tokens,
                             window=args.window or 512, verify=not args.no_verify)
    model, tok, path = load_model_and_tokenizer(args.model)
    if args.window is None:
        cfg = dataclasses.replace(cfg, window=default_window(model, cfg.window))
    ids, documents, source = C.text_sample(args, "", tok, args.max_tokens, C.piece_tokens(cfg.window))
    out = calibrate(model, ids, cfg, progress=not args.no_progress, documents=documents)
    save_policy_file(out.policy_file, args.out, overwrite=args.overwrite)
    c = out.policy_file.calibration
    print(f"model: {path} ({out.policy_file.model.architecture}, {out.policy_file.model.num_moe_layers} MoE layers)")
    print(f"text: {source}, {c.tokens} tokens (sha256 {c.data_sha256[:12]}...)")
    print(f"strategy: {c.strategy}; forward passes: {c.forward_passes}")
    print(f"policy: {out.policy.to_dict()}")
    print(f"average k: simulated {c.simulated_average_k:.3f}"
          + (f", measured {c.measured['measured_average_k']:.3f}" if "measured_average_k" in c.measured else ""))
    if "value" in c.measured:
        print(quality_summary(c.measured))
    print(f"wrote {args.out}")
    return 0

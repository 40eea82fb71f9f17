"""``adaptk bench``: time MoE layers and a model, fixed vs adaptive k, side by side."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="preset", action="store_const", const="quick",
                       help="small preset (about 2 minutes on a 2-core CPU; the default)")
    group.add_argument("--full", dest="preset", action="store_const", const="full",
                       help="every shape: hidden 1024-4096, tokens 1-4096 (long)")
    parser.set_defaults(preset="quick")
    parser.add_argument("--out", default=None,
                        help="write bench.json and bench.md into this folder (new, empty or an earlier adaptk bench)")
    parser.add_argument("--overwrite", action="store_true",
                        help="also write into a --out folder adaptk did not write: same-named files are replaced, "
                             "nothing else in it is touched")
    parser.add_argument("--trials", type=int, default=None, help="timed trials per measurement (median)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up rounds")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--clock", choices=("wall", "cpu"), default=None,
                        help="wall-clock time (default) or this process's CPU time (steadier on a shared machine)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for the run")
    parser.add_argument("--model", action="append", default=None, metavar="PATH_OR_NAME",
                        help="model for the end-to-end part, repeatable: a folder, 'default' (the shipped model) or "
                             "a synthetic one (random-mixtral-h512, random-mixtral-h1024); default: default and "
                             "random-mixtral-h1024")
    parser.add_argument("--no-model", action="store_true", help="skip the end-to-end model part")
    parser.add_argument("--layers-only-first", type=int, default=None, metavar="N",
                        help="only the first N layer shapes of the preset")
    parser.add_argument("--shape", action="append", type=_shape, default=None, metavar="NAME:H:I:N:K:T",
                        help="measure this layer shape instead of the preset's (repeatable), e.g. "
                             "mixtral-like:1024:3584:8:2:4096 (hidden, expert width, experts, native k, tokens)")
    parser.add_argument("--kernels", default=None, metavar="K1,K2", type=_kernels,
                        help="adaptk matmul kernels to time (default: exact,onednn,onednn-packed,native; those that cannot run here are skipped)")
    parser.add_argument("--markdown", action="append", default=None, metavar="FILE",
                        help="rewrite the generated blocks of this Markdown file with the new tables "
                             "(<!-- bench:begin --> ... <!-- bench:end -->: every table; <!-- bench-summary:begin --> "
                             "... <!-- bench-summary:end -->: the compact one); the rest of the file is kept; "
                             "repeatable, checked before the run")


def _kernels(value: str) -> tuple[str, ...]:
    from adaptk.bench.config import check_kernel_names

    names = tuple(k.strip() for k in value.split(",") if k.strip())
    try:
        check_kernel_names(names)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return names


def _shape(value: str):
    from adaptk.bench.config import LayerShape

    parts = value.split(":")
    if len(parts) != 6:
        raise argparse.ArgumentTypeError(f"a shape is NAME:H:I:N:K:T, got {value!r}")
    try:
        return LayerShape(parts[0], *(int(p) for p in parts[1:]))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad shape {value!r}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    from adaptk.bench import PRESETS, run_bench
    from adaptk.bench.markdown_block import check_blocks
    from adaptk.bench.report import FULL_BLOCK, SUMMARY_BLOCK, check_out, render_markdown, update_markdown, write

    if args.out:
        check_out(args.out, args.overwrite)  # before the long run
    cfg = PRESETS[args.preset]()
    changes = {k: v for k, v in (("trials", args.trials), ("warmup", args.warmup), ("dtype", args.dtype),
                                 ("clock", args.clock),
                                 ("threads", args.threads)) if v is not None}
    if args.no_model:
        changes["model"] = None
    elif args.model:
        changes["model"] = dataclasses.replace(cfg.model, models=tuple(args.model))
    if args.layers_only_first is not None:
        changes["shapes"] = cfg.shapes[: args.layers_only_first]
    if args.shape:
        changes["shapes"] = tuple(args.shape)
    if args.kernels:
        changes["kernels"] = args.kernels
    cfg = dataclasses.replace(cfg, **changes)
    for path in args.markdown or ():  # before the run: a bad file must not cost minutes of timing
        check_blocks(path, (FULL_BLOCK, SUMMARY_BLOCK))
    result = run_bench(cfg, preset="custom shapes" if args.shape else args.preset, device=args.device,
                       progress=lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    print(render_markdown(result))
    if args.out:
        jpath, mpath = write(result, args.out, overwrite=args.overwrite)
        print(f"wrote {jpath} and {mpath}")
    for path in args.markdown or ():
        update_markdown(path, result, command=command_line(args))
        print(f"rewrote the generated blocks of {path}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The ``adaptk bench`` command that reproduces this run's tables (no output options)."""
    import dataclasses
    import shlex

    words = ["adaptk", "bench", f"--{args.preset}"]
    for flag, value in (("--trials", args.trials), ("--warmup", args.warmup), ("--dtype", args.dtype),
                        ("--clock", args.clock), ("--threads", args.threads),
                        ("--layers-only-first", args.layers_only_first)):
        if value is not None:
            words += [flag, str(value)]
    if args.device != "cpu":
        words += ["--device", args.device]
    if args.kernels:
        words += ["--kernels", ",".join(args.kernels)]
    for shape in args.shape or ():
        words += ["--shape", ":".join(str(v) for v in dataclasses.astuple(shape))]
    if args.no_model:
        words.append("--no-model")
    for model in args.model or ():
        words += ["--model", model]
    return shlex.join(words)

"""``adaptk`` command line: thin subcommands that build configs and call the library.

Each subcommand lives in its own module and is imported only when it runs, so ``adaptk --help``
stays fast. A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("adaptk.cli.inspect", "list a model's MoE layers and route a text through a policy"),
    "train": ("adaptk.cli.train", "train a small MoE language model with routing controls"),
    "calibrate": ("adaptk.cli.calibrate", "fit a routing policy file for a model and some text"),
    "evaluate": ("adaptk.cli.evaluate", "the main job: calibrate, evaluate and report (offline default)"),
    "report": ("adaptk.cli.report", "render the HTML/Markdown/PNG report from evaluation JSON"),
    "bench": ("adaptk.cli.bench", "time MoE layers and models, fixed vs adaptive k, side by side"),
    "monitor": ("adaptk.cli.monitor", "routing health and drift of a model on some text"),
    "serve": ("adaptk.cli.serve", "vLLM's OpenAI-compatible server routing through a policy, health on /metrics"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptk", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(_missing=True)
    return parser


EXIT_ERROR = 2  # an AdaptkError: a user mistake, one line on stderr
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), the shell's 128 + signal number


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; exit codes: 0 ok, 2 a user error, 130 interrupted (Ctrl-C), and
    whatever else a subcommand documents (e.g. ``monitor --fail-on-drift``: 3)."""
    command = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        return _dispatch(parser, args)
    except KeyboardInterrupt:
        # Ctrl-C: one line on stderr and the conventional exit code, no traceback
        name = f"adaptk {command}" if command else "adaptk"
        try:
            print(f"{name}: interrupted", file=sys.stderr)
        except (OSError, ValueError):
            pass
        return EXIT_INTERRUPTED


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 0
    if getattr(args, "_missing", False):
        parser.error(f"subcommand {args.command!r} is not available in this build")
    from adaptk.errors import AdaptkError

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except AdaptkError as exc:
        print(f"adaptk {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""``python -m adaptk.lm_eval ARGS``: lm-eval's own CLI (``lm_eval ARGS``) with ``--model adaptk`` registered."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from adaptk.errors import AdaptkError


@contextmanager
def _adaptk_logs_shown() -> Iterator[None]:
    """lm-eval's CLI shows only its own loggers: show adaptk's INFO lines (the statistics) next to
    them, for the run (the logger is put back as it was after)."""
    logger = logging.getLogger("adaptk")
    saved = logger.level, logger.propagate
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s [adaptk] %(message)s",
                                           datefmt="%Y-%m-%d:%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved


def main(argv: list[str] | None = None) -> int:
    from adaptk.lm_eval import register

    saved = sys.argv
    if argv is not None:
        sys.argv = [saved[0], *argv]  # lm-eval's CLI reads sys.argv
    try:
        register()
        from lm_eval.__main__ import cli_evaluate

        with _adaptk_logs_shown():
            cli_evaluate()
    except AdaptkError as exc:
        print(f"adaptk lm-eval: error: {exc}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())

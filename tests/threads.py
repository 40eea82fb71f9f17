"""Run one function in several threads at once, as threads serving one model do."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_in_threads(fn: Callable[[], object], threads: int) -> None:
    """Start ``threads`` threads running ``fn`` and wait for all of them."""
    workers = [threading.Thread(target=fn) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

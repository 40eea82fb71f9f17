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


def route_in_threads(route: Callable[..., object], hidden, weight, stats, *, calls: int, threads: int = 4) -> None:
    """``threads`` threads each call ``route(hidden, weight)`` ``calls`` times, all counting into
    ``stats``; every token must be counted once, with two kept slots (a router keeping K = 2
    for every token). A call that did not route would count nothing: the totals catch it too."""

    def work():
        for _ in range(calls):
            route(hidden, weight)

    run_in_threads(work, threads)
    report = stats.report()
    tokens = threads * calls * hidden.shape[0]
    assert report.tokens == sum(report.k_histogram) == tokens
    assert sum(report.expert_counts) == tokens * 2

"""The import graph runs one way: measure and loading sit below calibrate and evaluate, calibrate
sits below evaluate, and evaluate, cli, monitor and lm_eval reach calibrate only through its package."""

import pytest

grimp = pytest.importorskip("grimp")

BELOW = [("adaptk.calibrate", "adaptk.evaluate"), ("adaptk.measure", "adaptk.calibrate"),
         ("adaptk.measure", "adaptk.evaluate"), ("adaptk.loading", "adaptk.evaluate"),
         ("adaptk.loading", "adaptk.calibrate")]


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("adaptk", cache_dir=None)


@pytest.mark.parametrize(("low", "high"), BELOW)
def test_no_chain_runs_back_up(graph, low, high):
    assert graph.find_shortest_chain(low, high) is None


@pytest.mark.parametrize("user", ["adaptk.evaluate", "adaptk.cli", "adaptk.monitor", "adaptk.lm_eval"])
def test_calibrate_is_reached_only_through_its_package(graph, user):
    inner = {m for m in graph.find_children("adaptk.calibrate")}
    users = {m for m in graph.find_descendants(user)} | {user}
    reached = {(u, m) for m in inner for u in graph.find_modules_that_directly_import(m) if u in users}
    assert not reached

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


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one adaptk module in the import graph."""
    nx = pytest.importorskip("networkx")
    g = nx.DiGraph()
    modules = {m for m in graph.modules if m == "adaptk" or m.startswith("adaptk.")}
    for m in modules:
        g.add_node(m)
        g.add_edges_from((m, t) for t in graph.find_modules_directly_imported_by(m) if t in modules)
    return [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]


def test_no_module_import_cycle(graph):
    """No two modules import each other, directly or through others (TYPE_CHECKING imports count:
    declare what a module needs of another as a Protocol instead)."""
    cycles = _cycles(graph)
    assert not cycles, "import cycles among adaptk modules: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a two-module cycle is found, a chain is not."""

    class Graph:
        modules = {"adaptk.a", "adaptk.b", "adaptk.c"}
        edges = {"adaptk.a": {"adaptk.b"}, "adaptk.b": {"adaptk.a", "adaptk.c"}, "adaptk.c": set()}

        def find_modules_directly_imported_by(self, m):
            return self.edges[m]

    assert _cycles(Graph()) == [["adaptk.a", "adaptk.b"]]

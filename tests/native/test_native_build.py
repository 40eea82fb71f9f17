"""``adaptk.native.build``: a package's sources and the headers they include, directly or through
another header, make the cache key; a change to any of them compiles anew."""

from pathlib import Path

import pytest

from adaptk.native import build

PACKAGE = "adaptk.routing"  # its csrc/: route_topk.c includes route_rows.h, which includes counters.h


def test_headers_are_found_through_the_headers_that_include_them():
    code = build.source(PACKAGE, "route_topk.c")
    found = build.headers(PACKAGE, code)
    assert list(found) == ["counters.h", "route_rows.h"]
    assert found["counters.h"] == build.source(PACKAGE, "counters.h")
    assert build.headers("adaptk.experts", build.source("adaptk.experts", "small_gemm.c")) == {}


def _keys(monkeypatch, changed: str | None) -> list[bytes | str]:
    """The key ``build_library`` asks the cache for, with ``changed`` (a csrc file) altered."""
    original, seen = build.source, []
    monkeypatch.setattr(build, "source", lambda package, name: original(package, name) + (
        b"\n/* changed */\n" if name == changed else b""))
    monkeypatch.setattr(build, "compiler", lambda *a, **k: "/bin/true")
    monkeypatch.setattr(build, "compile_cached", lambda name, key, steps, instead, suffix=".so":
                        seen.append(key) or Path("/nonexistent"))
    build.build_library("routers", PACKAGE, ("route_topk.c", "route_native.c"), "do without")
    monkeypatch.undo()
    return seen[0]


@pytest.mark.parametrize("changed", ["route_topk.c", "route_native.c", "route_rows.h", "counters.h"])
def test_a_changed_source_or_nested_header_changes_the_key(monkeypatch, changed):
    assert _keys(monkeypatch, changed) != _keys(monkeypatch, None)


def test_a_library_is_compiled_once_from_all_its_sources(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path))
    try:
        build.compiler("no compiler here")
    except build.NativeBuildError:
        pytest.skip("no C compiler")
    first = build.build_library("routers", PACKAGE, ("route_topk.c", "route_native.c"), "do without")
    assert first.parent == tmp_path and first.name.startswith("routers-")
    mtime = first.stat().st_mtime_ns
    again = build.build_library("routers", PACKAGE, ("route_topk.c", "route_native.c"), "do without")
    assert again == first and first.stat().st_mtime_ns == mtime  # the cache's, not compiled again

"""Generated blocks of Markdown files and ``adaptk bench --markdown FILE``: the block is rewritten,
every other byte is kept, and a file without the markers is refused before the bench runs."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptk.bench import BenchConfig, LayerShape, run_bench
from adaptk.bench.markdown_block import (
    MarkdownBlockError,
    check_blocks,
    find_blocks,
    replace_blocks,
    rewrite_blocks,
)
from adaptk.bench.report import markdown_blocks, render_summary, summary_table, update_markdown
from adaptk.cli.main import main
from adaptk.errors import AdaptkError

DOC = "# Title\n\nintro\n\n<!-- bench:begin -->\nold tables\n<!-- bench:end -->\n\nafter\n"

# text that cannot form a marker line of its own ("<" and ">" left out)
_plain = st.text(alphabet=st.characters(blacklist_characters="<>\r", blacklist_categories=("Cs",)), max_size=80)


@pytest.fixture(scope="module")
def tiny_result():
    shape = LayerShape("tiny", 32, 48, 8, 2, 24)
    return run_bench(BenchConfig((shape,), trials=1, warmup=0, model=None, kernels=("exact",)), preset="test")


def test_replace_keeps_everything_outside_the_block():
    new = replace_blocks(DOC, {"bench": "new tables\n"})
    assert new == DOC.replace("old tables", "new tables")
    assert replace_blocks(new, {"bench": "old tables"}) == DOC  # a missing final newline is added


@settings(max_examples=60, deadline=None)
@given(before=_plain, inside=_plain, after=_plain, body=_plain)
def test_replace_property(before, inside, after, body):
    text = f"{before}\n<!-- bench:begin -->\n{inside}\n<!-- bench:end -->\n{after}"
    new = replace_blocks(text, {"bench": body, "bench-summary": "unused"})
    head, tail = new.split("<!-- bench:begin -->\n", 1)
    assert head == f"{before}\n"
    assert tail.endswith(f"<!-- bench:end -->\n{after}")
    assert find_blocks(new).keys() == {"bench"}
    assert replace_blocks(new, {"bench": inside + "\n"}) == text  # undone exactly


def test_two_blocks_and_unnamed_blocks():
    text = ("a\n<!-- bench-summary:begin -->\nx\n<!-- bench-summary:end -->\nb\n"
            "<!-- other:begin -->\nkept\n<!-- other:end -->\n<!-- bench:begin -->\ny\n<!-- bench:end -->\n")
    new = replace_blocks(text, {"bench": "Y\n", "bench-summary": "X\n"})
    assert new == text.replace("\nx\n", "\nX\n").replace("\ny\n", "\nY\n")
    assert "kept" in new


def test_crlf_file_keeps_its_line_endings_outside(tmp_path):
    path = tmp_path / "doc.md"
    path.write_bytes(DOC.replace("\n", "\r\n").encode())
    rewrite_blocks(path, {"bench": "new\n"})
    data = path.read_bytes()
    assert data.startswith(b"# Title\r\n\r\nintro\r\n\r\n<!-- bench:begin -->\r\nnew\n<!-- bench:end -->\r\n")
    assert data.endswith(b"\r\nafter\r\n")


@pytest.mark.parametrize("text, words", [
    ("no markers here\n", "has no generated block"),
    ("<!-- bench:begin -->\nx\n", "has no <!-- bench:end -->"),
    ("x\n<!-- bench:end -->\n", "without a <!-- bench:begin -->"),
    ("<!-- bench:end -->\n<!-- bench:begin -->\n", "without a <!-- bench:begin -->"),
    ("<!-- bench:begin -->\n<!-- bench:end -->\n<!-- bench:begin -->\n<!-- bench:end -->\n", "appears twice"),
    ("<!-- bench:begin -->\n<!-- bench-summary:begin -->\n<!-- bench-summary:end -->\n<!-- bench:end -->\n",
     "inside the open block"),
    ("inline `<!-- bench:begin -->` and `<!-- bench:end -->` are not markers\n", "has no generated block"),
])
def test_malformed_markers_are_refused(tmp_path, text, words):
    path = tmp_path / "doc.md"
    path.write_text(text)
    with pytest.raises(MarkdownBlockError, match=words) as info:
        rewrite_blocks(path, {"bench": "new\n"})
    assert isinstance(info.value, AdaptkError) and str(path) in str(info.value)
    assert path.read_text() == text  # untouched


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(MarkdownBlockError, match="cannot read"):
        check_blocks(tmp_path / "absent.md", ("bench",))
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"\xff\xfe<!-- bench:begin -->\n")
    with pytest.raises(MarkdownBlockError, match="cannot read"):
        check_blocks(bad, ("bench",))


def test_rewrite_is_atomic_and_keeps_mode_and_links(tmp_path, monkeypatch):
    path = tmp_path / "doc.md"
    path.write_text(DOC)
    os.chmod(path, 0o640)
    link = tmp_path / "link.md"
    link.symlink_to(path)
    rewrite_blocks(link, {"bench": "new\n"})
    assert link.is_symlink() and "new" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640

    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    before = path.read_text()
    with pytest.raises(MarkdownBlockError, match="No space left"):
        rewrite_blocks(path, {"bench": "newer\n"})
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.md", "link.md"]  # no temp file left


def test_summary_table_of_a_real_run(tiny_result):
    layer = tiny_result["layers"][0]
    table = summary_table(tiny_result).splitlines()
    assert table[0] == ("| layer | half k=1: time / ideal | all k=1: time / ideal "
                        "| fixed k, ms: adaptk vs transformers' fastest |")
    s = layer["seconds"]
    fastest_tf = min(s[f"transformers {b} | fixed"] for b in ("eager", "grouped_mm", "batched_mm")
                     if f"transformers {b} | fixed" in s)
    cells = [f"{layer['ratios'][f'adaptk | {m}']:.3f} / {layer['flop_ratio'][m]:.3f}" for m in ("half k=1", "all k=1")]
    assert table[2] == (f"| {layer['shape']['label']} | {cells[0]} | {cells[1]} "
                        f"| {s['adaptk | fixed'] * 1e3:.2f} (exact) vs {fastest_tf * 1e3:.2f} |")
    summary = render_summary(tiny_result, command="adaptk bench --quick")
    env = tiny_result["environment"]
    assert summary.startswith("`adaptk bench --quick`: ")
    threads = f"{env['threads']} thread" + ("" if env["threads"] == 1 else "s")
    assert f"{threads}, wall clock, float32, medians of 1 trial;" in summary


def test_summary_merges_half_k_columns():
    """Shapes with native k 4 and 8 put "all k=2" and "all k=4" in one "all k=K/2" column."""
    def layer(label, mixes):
        return {"shape": {"label": label}, "flop_ratio": {"fixed": 1.0, **{m: 0.5 for m in mixes}},
                "ratios": {f"adaptk native | {m}": 0.6 for m in mixes},
                "seconds": {"adaptk native | fixed": 0.002}}

    result = {"layers": [layer("a", ["half k=1", "all k=1"]), layer("b", ["half k=1", "all k=4", "all k=1"]),
                         layer("c", ["half k=1", "all k=2", "all k=1"])]}
    lines = summary_table(result).splitlines()
    assert lines[0].count("all k=K/2") == 1 and "all k=4" not in lines[0]
    assert lines[2] == "| a | 0.600 / 0.500 | - | 0.600 / 0.500 | 2.00 (native) |"
    assert lines[3] == lines[4].replace("| c |", "| b |")


def test_update_markdown_fills_both_blocks(tmp_path, tiny_result):
    path = tmp_path / "doc.md"
    text = DOC + "<!-- bench-summary:begin -->\n<!-- bench-summary:end -->\n"
    path.write_text(text)
    update_markdown(path, tiny_result, command="adaptk bench --no-model")
    blocks = markdown_blocks(tiny_result, command="adaptk bench --no-model")
    assert path.read_text() == replace_blocks(text, blocks)
    assert blocks["bench"].startswith("Written by `adaptk bench --no-model` on ")
    assert "### MoE layer: fixed native k, milliseconds per call (medians)" in blocks["bench"]
    assert "## adaptk bench" not in blocks["bench"]


def test_cli_refuses_a_file_without_markers_before_running(tmp_path, capsys, monkeypatch):
    import adaptk.bench

    def must_not_run(*_, **__):
        raise AssertionError("the bench ran although the Markdown file was bad")

    monkeypatch.setattr(adaptk.bench, "run_bench", must_not_run)
    path = tmp_path / "notes.md"
    path.write_text("my notes\n")
    assert main(["bench", "--no-model", "--markdown", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adaptk bench: error: ") and str(path) in err and "<!-- bench:begin -->" in err
    assert err.count("\n") == 1 and path.read_text() == "my notes\n"


def test_cli_rewrites_the_block(tmp_path, capsys):
    path = tmp_path / "perf.md"
    path.write_text(DOC)
    argv = ["bench", "--no-model", "--trials", "1", "--warmup", "0", "--kernels", "exact",
            "--shape", "tiny:32:48:8:2:24", "--markdown", str(path)]
    assert main(argv) == 0
    text = path.read_text()
    assert text.startswith("# Title\n\nintro\n\n<!-- bench:begin -->\nWritten by `adaptk bench --quick "
                           "--trials 1 --warmup 0 --kernels exact --shape tiny:32:48:8:2:24 --no-model` on ")
    assert text.endswith("<!-- bench:end -->\n\nafter\n") and "old tables" not in text
    assert "| tiny H32 I48 8x top-2 T24 | half k=1 | 0.750 |" in text
    assert f"rewrote the generated blocks of {path}" in capsys.readouterr().out


def test_the_repository_docs_hold_their_generated_blocks():
    """README.md has the compact block and docs/performance.md the full one, well formed, so that
    ``adaptk bench --markdown`` can regenerate both."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    check_blocks(root / "README.md", ("bench-summary",))
    check_blocks(root / "docs" / "performance.md", ("bench",))

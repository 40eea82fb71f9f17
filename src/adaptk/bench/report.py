"""Bench results as JSON and as Markdown tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaptk.outputs import check_folder, entries_are, register_legacy, write_folder


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f}" if s < 1 else f"{s * 1e3:.0f}"


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f}"


KERNEL_COLUMNS = (("adaptk", "adaptk"), ("adaptk onednn", "adaptk onednn"),
                  ("adaptk onednn-packed", "adaptk onednn-packed"), ("adaptk native", "adaptk native"))
TRANSFORMERS_COLUMNS = (("transformers eager", "tf eager"), ("transformers grouped_mm", "tf grouped_mm"),
                        ("transformers batched_mm", "tf batched_mm"))
RATIO_COLUMNS = KERNEL_COLUMNS + (("adaptk padded", "padded"), ("adaptk grouped-by-k", "grouped-by-k")
                                  ) + TRANSFORMERS_COLUMNS
TIME_COLUMNS = KERNEL_COLUMNS + TRANSFORMERS_COLUMNS


def _quartiles(q: list[float] | tuple[float, float] | None) -> str:
    if q is None:
        return "-"
    return f"{q[0]:.3f}-{q[1]:.3f}" + (" **slower**" if q[0] > 1 else "")


def layer_tables(layers: list[dict[str, Any]]) -> str:
    bound = next((r["matmul_bound"]["kernel"] for r in layers if "matmul_bound" in r), None)
    lines = [
        "### MoE layer: time(k mix) / time(fixed native k), each back-end against its own fixed-k time",
        "",
        *([f"\"matmul bound\": the experts' matmuls alone (kernel {bound}) on the same rows per expert, "
           "no routing, gather or combine: what that kernel allows. \"read bound\": the larger of "
           "the FLOP ratio and the time one streaming read of the touched experts' weights takes "
           "(at the speed measured in this run) over the fastest fixed-k time: what memory allows.", ""]
          if bound else []),
        "| shape | k mix | FLOP ratio | read bound | matmul bound | " + " | ".join(h for _, h in RATIO_COLUMNS) + " |",
        "|---|---|---|---|---|" + "---|" * len(RATIO_COLUMNS),
    ]
    for r in layers:
        label = r["shape"]["label"]
        for mix, fr in r["flop_ratio"].items():
            if mix == "fixed":
                continue
            cells = [r.get("read_bound", {}).get(mix), r.get("matmul_bound", {}).get(mix)] + [
                r["ratios"].get(f"{v} | {mix}") for v, _ in RATIO_COLUMNS]
            lines.append(f"| {label} | {mix} | {fr:.3f} | "
                         + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    spread = [r for r in layers if r.get("ratio_quartiles")]
    if spread:
        lines += [
            "",
            "### Spread: quartiles of the per-trial ratios (trial i of the k mix / trial i of fixed k)",
            "",
            "A ratio whose first quartile is above 1 is slower than fixed k in most trials (marked **slower**).",
            "",
            "| shape | k mix | " + " | ".join(h for _, h in KERNEL_COLUMNS) + " |",
            "|---|---|" + "---|" * len(KERNEL_COLUMNS),
        ]
        for r in spread:
            q = r["ratio_quartiles"]
            for mix in r["flop_ratio"]:
                if mix != "fixed":
                    cells = [_quartiles(q.get(f"{v} | {mix}")) for v, _ in KERNEL_COLUMNS]
                    lines.append(f"| {r['shape']['label']} | {mix} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### MoE layer: fixed native k, milliseconds per call (medians)",
        "",
        "| shape | " + " | ".join(h for _, h in TIME_COLUMNS)
        + " | routing share, hot (fused / fused, no stats / native router / added by fused)"
        " | routing share after a layer call (fused / fused, no stats / native router / added by fused)"
        " | weights read GB/s | peak MiB fixed / adaptive / tf grouped_mm |",
        "|---|" + "---|" * (len(TIME_COLUMNS) + 4),
    ]
    for r in layers:
        s = r["seconds"]
        times = [_ms(s[f"{v} | fixed"]) if f"{v} | fixed" in s else "-" for v, _ in TIME_COLUMNS]
        rt = r.get("routing")
        share = _share_cell(rt)
        cold = _share_cell(rt.get("after_layer") if rt else None)
        gbs = r.get("read_bound", {}).get("weights_gb_per_s")
        gbs = f"{gbs:.1f}" if gbs else "-"
        pk = r.get("peak_bytes")
        mem = " / ".join(_mib(v) for v in pk.values()) if pk else "-"
        lines.append(f"| {r['shape']['label']} | " + " | ".join(times) + f" | {share} | {cold} | {gbs} | {mem} |")
    return "\n".join(lines)


def _share_cell(rt: dict[str, Any] | None) -> str:
    """A routing-share cell: fused with statistics / without / native router / what fused adds."""
    if not rt:
        return "-"
    whole = f"{100 * rt['share_native_router']:.2f}%" if "share_native_router" in rt else "-"
    return (f"{100 * rt['share_of_adaptive_layer']:.2f}% / {100 * rt['share_no_stats']:.2f}% / {whole} / "
            f"{100 * rt['added_share']:.2f}%")


def model_table(m: dict[str, Any]) -> str:
    lines = [
        f"### End to end: {m['model']} (prompt {m['prompt_len']}, {m['decode_steps']} decode steps)",
        "",
        "| batch | arm | avg k (prefill) | prefill tok/s | decode tok/s | prefill / unpatched | decode / unpatched |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {row["batch"]: row for row in m["rows"] if row["arm"] == "unpatched"}
    for row in m["rows"]:
        b = base.get(row["batch"])
        rel = (f"{row['prefill_tok_s'] / b['prefill_tok_s']:.2f} | {row['decode_tok_s'] / b['decode_tok_s']:.2f}"
               if b else "- | -")
        arm = row["arm"] + (" (native router)" if row.get("routing") == "native" else "")
        lines.append(f"| {row['batch']} | {arm} | {row['avg_k_prefill']:.2f} | "
                     f"{row['prefill_tok_s']:.0f} | {row['decode_tok_s']:.1f} | {rel} |")
    return "\n".join(lines)


def render_markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    parts = [
        f"## adaptk bench ({result['preset']})",
        "",
        f"torch {env['torch']}, transformers {env['transformers']}, device {env['device']}, "
        f"{env['threads']} threads, dtype {result['dtype']}, {result['trials']} interleaved trials "
        f"(+{result['warmup']} warm-up), medians of {result.get('clock', 'wall')}-clock time. "
        "Ratios are measured side by side in one run.",
        "",
        layer_tables(result["layers"]),
    ]
    for m in result.get("models", []):
        parts += ["", model_table(m)]
    return "\n".join(parts) + "\n"


KIND = "bench"


def _legacy_bench(folder: Path) -> list[str] | None:
    """A bench folder of an adaptk version before the output marker: bench.json (+ bench.md) only."""
    names = entries_are(folder, {"bench.json", "bench.md"}, "bench.json")
    if names is None:
        return None
    data = json.loads((folder / "bench.json").read_text())
    return names if isinstance(data, dict) and {"environment", "layers"} <= data.keys() else None


register_legacy(KIND, _legacy_bench)


def check_out(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Validate the bench folder without writing (before the long run); see :mod:`adaptk.outputs`."""
    return check_folder(out_dir, KIND, overwrite=overwrite)


def write(result: dict[str, Any], out_dir: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """bench.json and bench.md into ``out_dir``: only a new, empty or adaptk bench folder, unless
    ``overwrite`` (then same-named files are replaced, nothing else is touched)."""
    out = write_folder(out_dir, KIND, {"bench.json": json.dumps(result, indent=2, default=str),
                                       "bench.md": render_markdown(result)}, overwrite=overwrite)
    return out / "bench.json", out / "bench.md"


# --- generated blocks of Markdown files (``adaptk bench --markdown FILE``) ---

FULL_BLOCK, SUMMARY_BLOCK = "bench", "bench-summary"
_SUMMARY_KERNELS = ("adaptk native", "adaptk onednn-packed", "adaptk onednn", "adaptk")


def _machine(env: dict[str, Any]) -> str:
    cores = f", {env['cores']} cores" if env.get("cores") else ""
    host = f"{env.get('cpu') or 'cpu'}{cores}"
    return host if env["device"] == "cpu" else f"{env['device']} (host {host})"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def describe_run(result: dict[str, Any]) -> str:
    """One line: the configuration the numbers hold for (machine, threads, clock, dtype, trials)."""
    env = result["environment"]
    return (f"{_machine(env)}, {_count(env['threads'], 'thread')}, {result.get('clock', 'wall')} clock, "
            f"{result['dtype']}, medians of {_count(result['trials'], 'trial')}; "
            f"torch {env['torch']}, transformers {env['transformers']}")


_COLUMN_ORDER = {"half k=1": 0, "all k=K/2": 1, "all k=1": 2}


def _mix_column(mix: str) -> str:
    """The summary's column of a k mix: "all k=2" and "all k=4" share "all k=K/2"."""
    return "all k=K/2" if mix.startswith("all k=") and mix != "all k=1" else mix


def summary_table(result: dict[str, Any]) -> str:
    """The compact table, one row per layer shape: for each k mix, time(mix) / time(fixed k) of
    adaptk's ``native`` kernel (else the first of onednn-packed, onednn, exact that ran) next to
    the FLOP ideal, and that kernel's fixed-k time against transformers' fastest back-end."""
    columns = sorted(dict.fromkeys(_mix_column(m) for r in result["layers"] for m in r["flop_ratio"] if m != "fixed"),
                     key=lambda c: _COLUMN_ORDER.get(c, len(_COLUMN_ORDER)))  # most experts kept first
    lines = ["| layer | " + " | ".join(f"{c}: time / ideal" for c in columns)
             + " | fixed k, ms: adaptk vs transformers' fastest |",
             "|---|" + "---|" * (len(columns) + 1)]
    for r in result["layers"]:
        s = r["seconds"]
        kernel = next((k for k in _SUMMARY_KERNELS if f"{k} | fixed" in s), None)
        if kernel is None:
            continue
        cells = dict.fromkeys(columns, "-")
        for mix, ideal in r["flop_ratio"].items():
            ratio = r["ratios"].get(f"{kernel} | {mix}")
            if mix != "fixed" and ratio is not None:
                cells[_mix_column(mix)] = f"{ratio:.3f} / {ideal:.3f}"
        tf = [s[f"{v} | fixed"] for v, _ in TRANSFORMERS_COLUMNS if f"{v} | fixed" in s]
        name = kernel.removeprefix("adaptk").strip() or "exact"
        fixed = f"{_ms(s[f'{kernel} | fixed'])} ({name})" + (f" vs {_ms(min(tf))}" if tf else "")
        lines.append(f"| {r['shape']['label']} | " + " | ".join(cells.values()) + f" | {fixed} |")
    return "\n".join(lines)


def render_summary(result: dict[str, Any], command: str | None = None) -> str:
    """The README's block: the compact table and the configuration it holds for."""
    head = f"`{command}`: " if command else ""
    return f"{head}{describe_run(result)}.\n\n{summary_table(result)}\n"


def render_full_block(result: dict[str, Any], command: str | None = None) -> str:
    """docs/performance.md's block: every table of the run, under the line that made it."""
    head = f"Written by `{command}` on {_machine(result['environment'])}. " if command else ""
    return head + render_markdown(result).split("\n", 2)[2]  # render_markdown's title left out


def markdown_blocks(result: dict[str, Any], command: str | None = None) -> dict[str, str]:
    """What each generated block (``<!-- bench:begin -->``, ``<!-- bench-summary:begin -->``) holds."""
    return {FULL_BLOCK: render_full_block(result, command), SUMMARY_BLOCK: render_summary(result, command)}


def update_markdown(path: str | Path, result: dict[str, Any], command: str | None = None) -> Path:
    """Rewrite the generated blocks present in the Markdown file ``path`` (atomic; nothing else changes).

    Raises :class:`adaptk.bench.markdown_block.MarkdownBlockError` where the file has neither block.
    """
    from adaptk.bench.markdown_block import rewrite_blocks

    return rewrite_blocks(path, markdown_blocks(result, command))

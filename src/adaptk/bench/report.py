"""Bench results as JSON and as Markdown tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f}" if s < 1 else f"{s * 1e3:.0f}"


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f}"


def layer_tables(layers: list[dict[str, Any]]) -> str:
    lines = [
        "### MoE layer: time(k mix) / time(fixed native k), each back-end against its own fixed-k time",
        "",
        "| shape | k mix | FLOP ratio | adaptk | padded | grouped-by-k | tf eager | tf grouped_mm | tf batched_mm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in layers:
        label = r["shape"]["label"]
        for mix, fr in r["flop_ratio"].items():
            if mix == "fixed":
                continue

            def cell(v, mix=mix):
                key = f"{v} | {mix}"
                if v.startswith("transformers"):  # against its own fixed-k time
                    val = r["backend_ratios"].get(key)
                else:  # adaptk's strategies against adaptk's fixed-k time
                    val = r["seconds"][key] / r["seconds"]["adaptk | fixed"] if key in r["seconds"] else None
                return "-" if val is None else f"{val:.3f}"

            lines.append(f"| {label} | {mix} | {fr:.3f} | " + " | ".join(cell(v) for v in (
                "adaptk", "adaptk padded", "adaptk grouped-by-k", "transformers eager",
                "transformers grouped_mm", "transformers batched_mm")) + " |")
    lines += [
        "",
        "### MoE layer: fixed native k, milliseconds per call (medians)",
        "",
        "| shape | adaptk | tf eager | tf grouped_mm | tf batched_mm | routing share | peak MiB fixed / adaptive / tf grouped_mm |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in layers:
        s = r["seconds"]

        def t(v):
            return _ms(s[f"{v} | fixed"]) if f"{v} | fixed" in s else "-"

        rt = r.get("routing")
        share = f"{100 * rt['share_of_adaptive_layer']:.2f}%" if rt else "-"
        pk = r.get("peak_bytes")
        mem = " / ".join(_mib(v) for v in pk.values()) if pk else "-"
        lines.append(f"| {r['shape']['label']} | {t('adaptk')} | {t('transformers eager')} | "
                      f"{t('transformers grouped_mm')} | {t('transformers batched_mm')} | {share} | {mem} |")
    return "\n".join(lines)


def model_table(m: dict[str, Any]) -> str:
    lines = [
        f"### End to end: {m['model']} (prompt {m['prompt_len']}, {m['decode_steps']} decode steps)",
        "",
        "| batch | arm | avg k (prefill) | prefill tok/s | decode tok/s |",
        "|---|---|---|---|---|",
    ]
    for row in m["rows"]:
        lines.append(f"| {row['batch']} | {row['arm']} | {row['avg_k_prefill']:.2f} | "
                     f"{row['prefill_tok_s']:.0f} | {row['decode_tok_s']:.1f} |")
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
    if result.get("model"):
        parts += ["", model_table(result["model"])]
    return "\n".join(parts) + "\n"


def write(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out / "bench.json", out / "bench.md"
    jpath.write_text(json.dumps(result, indent=2, default=str))
    mpath.write_text(render_markdown(result))
    return jpath, mpath

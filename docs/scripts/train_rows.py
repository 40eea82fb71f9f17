"""The preset table of docs/train.md from trained model folders' ``train_summary.json``: one row per
folder with the seed, the held-out valid and test perplexity on the spread sample (with its 95%
interval; recompute an older folder's with ``docs/scripts/refresh_card.py``), the training-time check,
collapse warnings, and per layer the mean normalised routing entropy / max-over-mean expert load.

    python docs/scripts/train_rows.py runs/mixtral-mini-gutenberg-s0 runs/mixtral-mini-gutenberg-s1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def ppl(h: dict | None) -> str:
    return "-" if not h else f"{h['ppl']:.2f} [{h['ppl_lo']:.2f}, {h['ppl_hi']:.2f}]"


def row(s: dict) -> str:
    held = s.get("heldout") or {}
    check = s.get("routing_eval") or {"ppl": s.get("valid_ppl")}
    layers = " | ".join(f"{h['entropy_mean']:.2f} / {h['load_max_over_mean']:.2f}" for h in s["valid_routing"])
    return (f"| `{s['preset']}` | {s['config']['seed']} | {s['parameters'] / 1e6:.2f}M ({s['active_parameters'] / 1e6:.2f}M) "
            f"| {ppl(held.get('valid'))} | {ppl(held.get('test'))} | {check['ppl']:.2f} | {s['collapse_warnings']} "
            f"| {layers} |")


def table(summaries: list[dict]) -> str:
    n = max(len(s["valid_routing"]) for s in summaries)
    head = ("| preset | seed | params (active) | valid ppl (spread) | test ppl (spread) | training-time check | "
            "collapse warnings | " + " | ".join(f"layer {i}" for i in range(n)) + " |")
    return "\n".join([head, "|---" * (7 + n) + "|", *(row(s) for s in summaries)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", help="folders written by adaptk train")
    args = ap.parse_args()
    print(table([json.loads((Path(f) / "train_summary.json").read_text(encoding="utf-8")) for f in args.folders]))


if __name__ == "__main__":
    main()

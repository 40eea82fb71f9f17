"""Compare builds of the native kernel (``-D`` settings of ``small_gemm.c``) side by side in one
process: the same packed weights, the same rows, each build's grouped call timed in turn. One
thread, process CPU time, medians over repeats; every expert gets the same number of rows.

    python docs/scripts/native_builds.py --build= --build=-DPREFETCH_ROWS=99 --rows 8,12,16,24,64
"""

from __future__ import annotations

import argparse
import functools

import torch

from adaptk.bench.timing import interleaved
from adaptk.experts import native


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", action="append", required=True,
                   help="extra compiler flags of one build, written --build=-DPREFETCH_ROWS=99 (--build= : as "
                        "shipped); repeatable")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--width", type=int, default=512, help="expert width (intermediate size)")
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--rows", default="1,8,12,16,24,64", help="rows per expert, comma-separated")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(1)
    shipped = native.FLAGS
    gemms, pairs = {}, {}
    try:
        for flags in a.build:
            native.FLAGS = shipped + tuple(flags.split())
            native.library.cache_clear()
            lib = native.library()
            gemms[flags or "as shipped"] = lib.adaptk_grouped_gemm
            pairs[flags or "as shipped"] = lib.adaptk_bf16_pairs()
    finally:
        native.FLAGS = shipped
        native.library.cache_clear()
    dtype = getattr(torch, a.dtype)
    up = native.PackedExperts([torch.randn(2 * a.width, a.hidden).to(dtype) for _ in range(a.experts)])
    down = native.PackedExperts([torch.randn(a.hidden, a.width).to(dtype) for _ in range(a.experts)])
    if dtype == torch.bfloat16 and set(pairs.values()) != {int(up.pairs)}:
        p.error("these builds pack bfloat16 weights differently (one has AVX512-BF16 off): compare them in float32")
    print(f"ms per call of all {a.experts} experts, both projections, hidden {a.hidden}, width {a.width}, "
          f"{a.dtype}, medians of {a.repeats}")
    print("| rows per expert | " + " | ".join(gemms) + " |")
    print("|---" * (len(gemms) + 1) + "|")
    for rows in (int(r) for r in a.rows.split(",")):
        starts = torch.arange(0, a.experts * rows + 1, rows, dtype=torch.int64)  # [E+1]
        x = torch.randn(a.experts * rows, a.hidden)
        h = torch.randn(a.experts * rows, a.width)
        def run(gemm, x=x, h=h, starts=starts):
            up._gemm = down._gemm = gemm  # this build's entry point, the same packed weights
            up.grouped_matmul(x, 0, starts)
            down.grouped_matmul(h, 0, starts)

        fns = {name: functools.partial(run, gemm) for name, gemm in gemms.items()}
        times = interleaved(fns, a.repeats, warmup=1, clock="cpu", min_sample_s=0)
        cells = [f"{times[name] * 1e3:.2f}" for name in gemms]
        print(f"| {rows} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

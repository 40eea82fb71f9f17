"""Time one expert's two projections per row count, for each way of multiplying: MKL
(``torch.mm``), oneDNN on the plain weights, oneDNN on packed weights, packed weights with
the row group padded to 4 (what ``onednn-packed`` does for 1-3 rows), and adaptk's ``native``
small-row GEMM on its column panels (where it builds here). One thread, process CPU
time, medians over repeats, each repeat cycling over several experts so that the weights come
from memory as in a MoE layer.

    python docs/scripts/kernel_rows.py --width 704 --experts 24
    python docs/scripts/kernel_rows.py --width 3584 --experts 8
"""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F

from adaptk.bench.timing import interleaved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--width", type=int, default=3584, help="expert width (intermediate size)")
    p.add_argument("--experts", type=int, default=8, help="distinct experts cycled over")
    p.add_argument("--rows", default="1,2,3,4,5,6,7,8,16,32,64")
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(1)
    lp, reorder = torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight
    up = [torch.randn(2 * a.width, a.hidden) * 0.02 for _ in range(a.experts)]  # [2I, H]
    down = [torch.randn(a.hidden, a.width) * 0.02 for _ in range(a.experts)]  # [H, I]
    pup, pdown = [reorder(w, None) for w in up], [reorder(w, None) for w in down]

    def dnn(x, wu, wd):
        return lp(lp(x, wu, None, "none", [], "")[:, : a.width].contiguous(), wd, None, "none", [], "")

    def padded(x, wu, wd):
        r = x.shape[0]
        if r < 4:
            x = F.pad(x, (0, 0, 0, 4 - r))
        h = lp(x, wu, None, "none", [], "")[:r, : a.width]
        h = F.pad(h, (0, 0, 0, 4 - r)) if r < 4 else h.contiguous()
        return lp(h, wd, None, "none", [], "")[:r]

    from adaptk.experts import gemm

    ways = {
        "mkl": lambda x, e: (x @ up[e].t())[:, : a.width] @ down[e].t(),
        "onednn": lambda x, e: dnn(x, up[e], down[e]),
        "packed": lambda x, e: dnn(x, pup[e], pdown[e]),
        "packed, padded to 4": lambda x, e: padded(x, pup[e], pdown[e]),
    }
    if gemm.unavailable() is None:
        nup, ndown = [gemm.PackedWeight(w) for w in up], [gemm.PackedWeight(w) for w in down]
        ways["native"] = lambda x, e: ndown[e].matmul(nup[e].matmul(x)[:, : a.width])
    rows = [int(r) for r in a.rows.split(",")]
    def cycle(f, x):  # every expert once: their weights come from memory, as in a layer
        for e in range(a.experts):
            f(x, e)

    inputs = {r: torch.randn(r, a.hidden) for r in rows}
    fns = {(r, name): functools.partial(cycle, f, inputs[r]) for r in rows for name, f in ways.items()}
    times = {key: t / a.experts * 1e3
             for key, t in interleaved(fns, a.repeats, warmup=1, clock="cpu", min_sample_s=0).items()}
    print(f"ms per expert, both projections, hidden {a.hidden}, width {a.width}, {a.experts} experts, "
          f"medians of {a.repeats}")
    print("| rows | " + " | ".join(ways) + " |")
    print("|---|" + "---|" * len(ways))
    for r in rows:
        print(f"| {r} | " + " | ".join(f"{times[(r, n)]:.3f}" for n in ways) + " |")


if __name__ == "__main__":
    main()

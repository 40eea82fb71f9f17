"""Where a layer with every token at k=1 loses time against the FLOP ratio: adaptk's native
grouped calls (both projections, all experts, no routing, gather or combine) at the rows per
expert the bench's synthetic router gives, next to the same rows evened out over the experts,
the sum over experts of each one's cost at its own row count (each row count timed as a layer
where every expert gets that many rows), and one streaming read of all the weights. Ratios are
against the native k. One thread, process CPU time, medians over repeats, all cases timed in
turn in each repeat.

    python docs/scripts/row_spread.py --shape olmoe-like:1024:512:64:8:512
    python docs/scripts/row_spread.py --shape qwen-like:1024:704:60:4:512
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from adaptk.bench.config import LayerShape
from adaptk.bench.synthetic import make_tokens
from adaptk.bench.timing import interleaved
from adaptk.experts import gemm
from adaptk.experts.cpu_fast import row_starts


def _even(total: int, experts: int) -> list[int]:
    q, r = divmod(total, experts)
    return [q + 1] * r + [q] * (experts - r)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="olmoe-like:1024:512:64:8:512", help="NAME:H:I:N:K:T, as adaptk bench --shape")
    p.add_argument("--k", type=int, default=1, help="experts every token keeps (its router's best k)")
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    name, *dims = a.shape.split(":")
    shape = LayerShape(name, *(int(d) for d in dims))
    if not 1 <= a.k <= shape.top_k:
        p.error(f"--k must be 1..{shape.top_k}")
    torch.set_num_threads(1)
    n = shape.num_experts
    index = make_tokens(shape, torch.float32, torch.device("cpu"), seed=0).index  # [T, K], best first
    routed = torch.bincount(index[:, : a.k].reshape(-1), minlength=n).tolist()  # [E] rows per expert
    fixed = torch.bincount(index.reshape(-1), minlength=n).tolist()
    ups = [torch.randn(2 * shape.intermediate, shape.hidden) * 0.02 for _ in range(n)]  # [2I, H]
    downs = [torch.randn(shape.hidden, shape.intermediate) * 0.02 for _ in range(n)]  # [H, I]
    up, down = gemm.PackedExperts(ups), gemm.PackedExperts(downs)

    def layer(counts: list[int]):
        starts = row_starts(counts)  # [E+1]
        x, h = torch.randn(sum(counts), shape.hidden), torch.randn(sum(counts), shape.intermediate)
        return lambda: (up.grouped_matmul(x, 0, starts), down.grouped_matmul(h, 0, starts))

    def read():
        for w in ups + downs:
            w.view(torch.uint8).amax()  # one streaming read of the bytes (as the bench's read bound)

    per_count = Counter(routed)
    even = _even(sum(routed), n)
    cases = {"native k": layer(fixed), f"k={a.k} as routed": layer(routed),
             f"k={a.k} rows evened out": layer(even), "one read of all weights": read}
    cases |= {f"every expert at {m} rows": layer([m] * n) for m in sorted(per_count) if m > 0}
    ms = {c: t * 1e3 for c, t in interleaved(cases, a.repeats, warmup=1, clock="cpu", min_sample_s=0).items()}
    # each expert at its own rows, costs added: an expert's share of the uniform layer at its count
    additive = sum(cnt * ms[f"every expert at {m} rows"] / n for m, cnt in per_count.items() if m > 0)
    base = ms["native k"]
    lo, hi = min(routed), max(routed)
    print(f"{shape.label}, native grouped calls, float32, one thread, medians of {a.repeats}; "
          f"FLOP ratio of k={a.k}: {a.k / shape.top_k:.3f}")
    print("| case | rows per expert | ms | / native k |")
    print("|---|---|---|---|")
    rows = [("native k", f"{min(fixed)}-{max(fixed)}", base),
            (f"k={a.k} as routed", f"{lo}-{hi}", ms[f"k={a.k} as routed"]),
            (f"k={a.k} as routed, each expert's cost at its own rows, added", f"{lo}-{hi}", additive),
            (f"k={a.k} rows evened out", f"{min(even)}-{max(even)}",
             ms[f"k={a.k} rows evened out"]),
            ("one read of all weights", "-", ms["one read of all weights"])]
    for label, r, t in rows:
        print(f"| {label} | {r} | {t:.2f} | {t / base:.3f} |")
    print()
    print("| rows on every expert | " + " | ".join(str(m) for m in sorted(per_count) if m > 0) + " |")
    print("|---" * (1 + sum(1 for m in per_count if m > 0)) + "|")
    print("| ms per expert | " + " | ".join(f"{ms[f'every expert at {m} rows'] / n:.3f}"
                                           for m in sorted(per_count) if m > 0) + " |")


if __name__ == "__main__":
    main()

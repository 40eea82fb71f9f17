"""One MoE layer's experts in vLLM's CPU kernel: plain vLLM's dense top-k call vs adaptk's
kept-pairs path (``adaptk.engines.vllm.pairs.run_kept``, as the plugin calls it) with a fraction
of the tokens at k = 1, and the FLOP ideal (kept pairs / native pairs).

    python docs/scripts/vllm_moe_layer.py --dtype float32 --tokens 16 64 512

Mixtral shape by default (hidden 1024, expert width 3584, 8 experts, top-2), random weights.
Both paths are timed interleaved, best of ``--repeats``, on ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--inter", type=int, default=3584)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--tokens", type=int, nargs="+", default=[16, 64, 512])
    p.add_argument("--k1-fraction", type=float, default=0.5, help="tokens that keep 1 of 2 experts")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from vllm._custom_ops import cpu_fused_moe, cpu_prepack_moe_weight

    from adaptk.engines.vllm.pairs import DROPPED, run_kept

    dtype = getattr(torch, args.dtype)
    isa = "amx" if dtype == torch.bfloat16 and torch.cpu._is_amx_tile_supported() else "vec"
    g = torch.Generator().manual_seed(0)
    e, h, i = args.experts, args.hidden, args.inter
    w13 = cpu_prepack_moe_weight((torch.randn(e, 2 * i, h, generator=g) * 0.02).to(dtype), isa)
    w2 = cpu_prepack_moe_weight((torch.randn(e, h, i, generator=g) * 0.02).to(dtype), isa)

    def kernel(x, w, ids):
        out = torch.empty_like(x)
        cpu_fused_moe(out, x, w13, w2, None, None, w.contiguous(), ids.contiguous(), "silu", isa, False)
        return out

    print(f"{args.dtype}, isa {isa}, H={h}, I={i}, E={e}, {args.threads} threads; "
          f"{args.k1_fraction:.0%} of tokens at k=1")
    print("| tokens | dense top-2 ms | kept pairs ms | ratio | FLOP ideal |")
    print("|---|---|---|---|---|")
    for t in args.tokens:
        x = torch.randn(t, h, generator=g).to(dtype)
        ids = torch.stack([torch.randperm(e, generator=g)[:2] for _ in range(t)]).to(torch.int32)
        w = torch.rand(t, 2, generator=g)
        w = w / w.sum(-1, keepdim=True)
        dropped = ids.clone()
        n1 = int(round(args.k1_fraction * t))
        dropped[torch.randperm(t, generator=g)[:n1], 1] = DROPPED
        ideal = int((dropped >= 0).sum()) / (2 * t)
        best = {"dense": float("inf"), "kept": float("inf")}
        for _ in range(args.repeats):
            for name, ids_ in (("dense", ids), ("kept", dropped)):
                s = time.perf_counter()
                run_kept(kernel, x, w, ids_, e)
                best[name] = min(best[name], time.perf_counter() - s)
        print(f"| {t} | {best['dense'] * 1e3:.2f} | {best['kept'] * 1e3:.2f} | "
              f"{best['kept'] / best['dense']:.3f} | {ideal:.3f} |")


if __name__ == "__main__":
    main()

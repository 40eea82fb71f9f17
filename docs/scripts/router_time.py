"""Time the router alone in a hot loop, as ``adaptk bench`` builds it: transformers'
``MixtralTopKRouter`` and copies patched by ``adaptk.patch`` with an entropy policy, with and
without the patch's statistics. One thread, microseconds per call, medians of 7.

    python docs/scripts/router_time.py --tokens 1
    python docs/scripts/router_time.py --tokens 1 --check deferred
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from adaptk.bench.config import LayerShape
from adaptk.bench.layer import _routing_fns
from adaptk.bench.synthetic import make_tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--tokens", type=int, default=1)
    p.add_argument("--calls", type=int, default=5000, help="calls per sample")
    p.add_argument("--check", choices=["auto", "eager", "deferred"], default="auto",
                   help="the patch's NaN/Inf check (auto: eager on the CPU, as adaptk bench runs it)")
    a = p.parse_args()
    torch.set_num_threads(1)
    shape = LayerShape("router", a.hidden, 4 * a.hidden, a.experts, a.top_k, a.tokens)
    tokens = make_tokens(shape, torch.float32, torch.device("cpu"), seed=0)
    with contextlib.ExitStack() as stack, torch.inference_mode():
        for name, fn in _routing_fns(shape, tokens, a.top_k, stack, a.check).items():
            for _ in range(a.calls // 10):
                fn()
            samples = []
            for _ in range(7):
                start = time.perf_counter()
                for _ in range(a.calls):
                    fn()
                samples.append((time.perf_counter() - start) / a.calls * 1e6)
            print(f"{name}: {statistics.median(samples):.1f} us")


if __name__ == "__main__":
    main()

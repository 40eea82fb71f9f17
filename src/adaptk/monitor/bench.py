"""Overhead of monitoring: forward time with and without a ``RoutingMonitor``, side by side.

    python -m adaptk.monitor.bench                      # Mixtral-like layer shapes, few layers
    python -m adaptk.monitor.bench --hidden 512 --intermediate 1792 --layers 2 --tokens 512   # CPU-sized

The model is a randomly initialised Mixtral (8 experts, top-2 by default) with the given
shapes; runs alternate (plain, monitored, plain, ...) so drift in machine load hits both.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from adaptk.bench.timing import sync
from adaptk.monitor.monitor import RoutingMonitor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Overhead:
    plain_ms: float  # median forward time without monitoring
    monitored_ms: float  # median forward time with the monitor attached
    tokens: int

    @property
    def ratio(self) -> float:
        return self.monitored_ms / self.plain_ms

    def line(self) -> str:
        return (f"tokens {self.tokens}: plain {self.plain_ms:.2f} ms | monitored {self.monitored_ms:.2f} ms | "
                f"ratio {self.ratio:.3f}")


@torch.no_grad()
def overhead(model: nn.Module, input_ids: torch.Tensor, repeats: int = 10, warmup: int = 2,
             clock: str = "wall") -> Overhead:
    """Median forward time of ``model(input_ids)`` without and with monitoring (alternating).

    ``clock="cpu"`` times this process's CPU time (steadier on a shared CPU machine; CPU only)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    now = time.perf_counter if clock == "wall" else time.process_time
    device = input_ids.device
    monitor = RoutingMonitor()
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(warmup + repeats):
        for monitored in (False, True):
            if monitored:
                monitor.attach(model)
            sync(device)
            t0 = now()
            model(input_ids=input_ids)
            sync(device)
            dt = (now() - t0) * 1e3
            if monitored:
                monitor.detach()
            if i >= warmup:
                times[monitored].append(dt)
    monitor.compute()  # the one host sync, outside the timed region
    return Overhead(statistics.median(times[False]), statistics.median(times[True]), input_ids.numel())


def mixtral_like(hidden: int = 4096, intermediate: int = 14336, layers: int = 2, experts: int = 8, k: int = 2,
                 dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> nn.Module:
    """A random Mixtral with Mixtral-8x7B layer shapes (by default) and few layers."""
    import transformers

    cfg = transformers.MixtralConfig(vocab_size=1024, hidden_size=hidden, intermediate_size=intermediate,
                                     num_hidden_layers=layers, num_attention_heads=max(hidden // 128, 1),
                                     num_key_value_heads=max(hidden // 512, 1), num_local_experts=experts,
                                     num_experts_per_tok=k, max_position_embeddings=8192)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gate.weight"):
                p.normal_(0, 0.02)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="forward time with vs without routing monitoring")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=14336)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--tokens", type=int, nargs="+", default=[512, 2048], help="tokens per forward (batch 1)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall-clock time, or this process's CPU time (steadier on a shared CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = mixtral_like(args.hidden, args.intermediate, args.layers, args.experts, args.k,
                         getattr(torch, args.dtype), args.device)
    print(f"mixtral-like: hidden {args.hidden}, intermediate {args.intermediate}, {args.experts} experts, "
          f"top-{args.k}, {args.layers} layers, {args.dtype} on {args.device}")
    for t in args.tokens:
        ids = torch.randint(0, 1024, (1, t), device=args.device)
        print(overhead(model, ids, repeats=args.repeats, clock=args.clock).line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

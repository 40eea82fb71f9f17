"""Time the router alone, as ``adaptk bench`` builds it: transformers' ``MixtralTopKRouter``
and copies patched by ``adaptk.patch`` with an entropy policy, with and without the patch's
statistics, routed by the fused router (the default), by the native router
(``routing="native"``, with statistics) and by the torch ops (``routing="torch"``), side by side
in one process. One thread, microseconds per call, medians of 7 interleaved samples
(``adaptk.bench.timing``): in a hot loop, or (``--after-layer``) each call right after a call of
the experts layer of the same shape (``native`` kernel where it builds, every token at k=1), as
a model runs its routers.

    python docs/scripts/router_time.py --tokens 1
    python docs/scripts/router_time.py --tokens 1 --check deferred
    python docs/scripts/router_time.py --tokens 1 --after-layer
    python docs/scripts/router_time.py --tokens 1 --after-layer --floor
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from adaptk.bench.config import LayerShape
from adaptk.bench.layer import _adaptk, _after_layer_fns, _routing_fns, kernel_runs, kernel_variant
from adaptk.bench.synthetic import apply_k, make_experts, make_tokens
from adaptk.bench.timing import interleaved


def _floor_fns(shape: LayerShape, tokens) -> dict:
    """The cost of calling a router at all: transformers' router module with a forward that
    returns a ready tuple (the module call), and the native router's C++ binding called with 17
    tokens, which it checks and declines (the binding's call)."""
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    from adaptk import FixedTopK
    from adaptk.bench.synthetic import router_config
    from adaptk.routing import binding, fused

    fns = {}
    module = MixtralTopKRouter(router_config(shape)).eval()
    ready = (tokens.hidden, tokens.hidden, tokens.hidden)
    module.forward = lambda *args, **kwargs: ready
    fns["module call, forward returns at once"] = lambda: module(tokens.hidden)
    if binding.unavailable() is None:
        tau = FixedTopK(1).rank_thresholds(0, 1, torch.device("cpu"))
        router = binding.extension().Router(tau, True, False, fused.NATIVE_MAX_TOKENS, True, None)
        over = torch.zeros(fused.NATIVE_MAX_TOKENS + 1, shape.hidden)
        fns["C++ binding call that declines"] = lambda: router(over, tokens.router)
    return fns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--width", type=int, default=3584, help="expert width (with --after-layer)")
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--tokens", type=int, default=1)
    p.add_argument("--calls", type=int, default=200, help="(layer, router) pairs per sample, with --after-layer")
    p.add_argument("--check", choices=["auto", "eager", "deferred"], default="auto",
                   help="the patch's NaN/Inf check (auto: eager on the CPU, as adaptk bench runs it)")
    p.add_argument("--after-layer", action="store_true", help="time each call right after a layer call")
    p.add_argument("--floor", action="store_true",
                   help="also time what any patched router pays: a router module whose forward returns at "
                        "once, and a call of the C++ binding that declines at once")
    a = p.parse_args()
    torch.set_num_threads(1)
    shape = LayerShape("router", a.hidden, a.width, a.experts, a.top_k, a.tokens)
    tokens = make_tokens(shape, torch.float32, torch.device("cpu"), seed=0)
    if a.after_layer:  # the layer: built (and its weights packed) outside inference mode, as the bench does
        experts = make_experts(shape, torch.float32, torch.device("cpu"), seed=0)
        layer_fn = kernel_variant(experts, "native") if kernel_runs(experts, "native") else _adaptk
        index, weights = apply_k(tokens.index, tokens.weights, torch.ones(a.tokens, dtype=torch.long), a.experts)
    with contextlib.ExitStack() as stack, torch.inference_mode():
        fns = _routing_fns(shape, tokens, a.top_k, stack, a.check)
        torch_ops = _routing_fns(shape, tokens, a.top_k, stack, a.check, routing="torch")
        fns |= {f"{name}, torch ops": fn for name, fn in torch_ops.items()
                if name in ("router adaptive", "router adaptive no stats")}
        if a.floor:
            fns |= _floor_fns(shape, tokens)
        if a.after_layer:
            fns = _after_layer_fns(fns, lambda: layer_fn(experts, tokens.hidden, index, weights), "wall", a.calls)
        # hot: each sample repeats a router call for about 50 ms; after a layer call: each
        # function reports its own mean over ``calls`` (layer, router) pairs
        times = interleaved(fns, trials=7, warmup=2, clock="wall", min_sample_s=0 if a.after_layer else 0.05)
        for name, t in times.items():
            print(f"{name}: {t * 1e6:.1f} us")


if __name__ == "__main__":
    main()

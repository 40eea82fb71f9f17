"""One MoE layer: fixed k vs k mixes, batching strategies, routing share, memory, and
transformers' back-ends on the same inputs."""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
from collections.abc import Callable
from typing import Any

import torch

from adaptk.bench.config import BenchConfig, LayerShape, default_mixes
from adaptk.bench.memory import peak_bytes
from adaptk.bench.synthetic import apply_k, flop_ratio, k_per_token, make_experts, make_tokens
from adaptk.bench.timing import CLOCKS, interleaved_samples, paired_quartiles, sync
from adaptk.counting import count_ids
from adaptk.errors import KernelError
from adaptk.experts.cpu_fast import expert_runs, row_starts, run_mlp
from adaptk.experts.kernels import check_kernel, kernel_for
from adaptk.experts.strategies import grouped_by_k_experts_forward, padded_experts_forward
from adaptk.experts.variable_k import GroupedRows, variable_k_experts_forward

log = logging.getLogger(__name__)
STRATEGIES = {"adaptk padded": padded_experts_forward, "adaptk grouped-by-k": grouped_by_k_experts_forward}


def _adaptk(experts, hidden, index, weights):
    return variable_k_experts_forward(experts, hidden, index, weights, order="slot")


def kernel_variant(experts: torch.nn.Module, kernel: str) -> Callable[..., torch.Tensor] | None:
    """adaptk's back-end with matmul kernel ``kernel`` (None, logged, where it cannot run)."""
    if not kernel_runs(experts, kernel):
        return None
    matmul = kernel_for(experts, kernel, "slot")

    def call(experts, hidden, index, weights):
        return variable_k_experts_forward(experts, hidden, index, weights, order="slot", kernel=matmul)

    return call


def kernel_runs(experts: torch.nn.Module, kernel: str) -> bool:
    try:
        check_kernel(experts, kernel)
    except KernelError as exc:
        log.info("skipping kernel %s: %s", kernel, exc)
        return False
    return True


def variant_name(kernel: str) -> str:
    return "adaptk" if kernel == "exact" else f"adaptk {kernel}"


def transformers_backend(name: str) -> Callable[..., torch.Tensor]:
    """transformers' experts function ``name`` ("eager", "grouped_mm", "batched_mm"). Sentinel
    slots are handled as transformers handles expert-parallel sentinels."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    def call(experts, hidden, index, weights):
        has_sentinel = bool((index >= experts.num_experts).any())
        saved_impl, saved_ep = experts.config._experts_implementation, experts._is_expert_parallel
        try:
            experts._is_expert_parallel = has_sentinel
            if name == "eager":
                experts.config._experts_implementation = "eager"
                return experts(hidden, index, weights)
            return ALL_EXPERTS_FUNCTIONS[name](experts, hidden, index, weights)
        finally:
            experts.config._experts_implementation, experts._is_expert_parallel = saved_impl, saved_ep

    return call


def _routing_fns(shape: LayerShape, tokens, kmax: int, stack: contextlib.ExitStack, check_finite: str = "auto",
                 routing: str = "fused") -> dict[str, Callable[[], Any]]:
    """The router alone, as models run it: transformers' own ``MixtralTopKRouter`` (native top-k)
    vs copies patched by ``adaptk.patch`` with an entropy policy (scores, finite check, entropy,
    k, masking, weights): with ``routing`` (as ``adaptk.patch`` takes it) with and without the
    patch's statistics, and, where ``routing`` is not "native", with the native router (whole
    router in C) and statistics. The patches stay in place until ``stack`` closes."""
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    import adaptk
    from adaptk.bench.synthetic import router_config

    if kmax > 1:
        policy = adaptk.EntropyThreshold((1, kmax), (0.5 * math.log(shape.num_experts),))
    else:
        policy = adaptk.EntropyThreshold((1,), ())
    arms = {"router adaptive": (True, routing), "router adaptive no stats": (False, routing)}
    if routing != "native":
        arms["router adaptive native"] = (True, "native")
    fns = {}
    for name in ("router native top-k", *arms):
        router = MixtralTopKRouter(router_config(shape)).to(tokens.router.device, tokens.router.dtype).eval()
        with torch.no_grad():
            router.weight.copy_(tokens.router)
        if name in arms:
            collect, how = arms[name]
            holder = torch.nn.Module()  # a MoE block with no experts to run: only its router is timed
            holder.gate, holder.experts = router, torch.nn.Module()
            holder.eval()
            stack.enter_context(adaptk.patch(holder, policy, collect_stats=collect, check_finite=check_finite,
                                             routing=how))
        fns[name] = lambda router=router: router(tokens.hidden)
    return fns


def _after_layer_fns(routers: dict[str, Callable[[], Any]], layer: Callable[[], Any], clock: str, calls: int,
                     device: torch.device | None = None) -> dict[str, Callable[[], float]]:
    """Each router timed alone right after an (untimed) call of the layer, as a model runs it:
    once per layer per step, with the caches the experts leave behind. Each function reports
    its own span: the mean over ``calls`` such (layer, router) pairs (synchronised on a GPU)."""
    now = CLOCKS[clock]

    def timed(router: Callable[[], Any]) -> Callable[[], float]:
        def run() -> float:
            total = 0.0
            for _ in range(calls):
                layer()
                sync(device)
                start = now()
                router()
                sync(device)
                total += now() - start
            return total / calls

        return run

    return {f"{name} after a layer call": timed(fn) for name, fn in routers.items()}


def _shares(times: dict[str, float], layer: float) -> dict[str, float]:
    """The routing step's share of (router + layer), ``times`` by ``_routing_fns`` name: fused
    with statistics, without, the native router, and what the fused and native routers add to
    the model's own router (its linear layer, softmax and top-k; negative: faster than it)."""
    native, fused, lean = times["router native top-k"], times["router adaptive"], times["router adaptive no stats"]
    out = {"native_s": native, "adaptive_s": fused, "no_stats_s": lean,
           "share_of_adaptive_layer": fused / (fused + layer), "share_no_stats": lean / (lean + layer),
           "added_share": (fused - native) / (fused + layer)}
    whole = times.get("router adaptive native")
    if whole is not None:
        out |= {"native_router_s": whole, "share_native_router": whole / (whole + layer),
                "added_share_native_router": (whole - native) / (whole + layer)}
    return out


def _matmul_only_fns(experts: torch.nn.Module, hidden: torch.Tensor, cases: dict, kernel: str
                     ) -> dict[str, Callable[[], Any]]:
    """The experts' matmuls (and activation) alone, on rows already grouped by expert: what the
    matrix library allows for each case's rows per expert, with no routing, gather or combine.
    Their ratio is the bound a back-end that calls this library can reach (CPU path)."""
    matmul = kernel_for(experts, kernel, "slot")
    fns = {}
    for cname, (index, _) in cases.items():
        rows = GroupedRows(index, experts.num_experts, "slot", sync_free=False)
        x, counts = hidden[rows.token], rows.counts.tolist()  # [V, H] grouped by expert
        fns[f"matmuls only | {cname}"] = lambda x=x, counts=counts: _matmuls(experts, x, counts, matmul)
    return fns


def _matmuls(experts: torch.nn.Module, x: torch.Tensor, counts: list[int], matmul) -> None:
    """Each expert's two projections and activation on its rows of x [V, H], in the calls the
    back-end makes (runs of experts for a kernel with ``grouped``); results dropped."""
    starts = row_starts(counts)
    for first, end, r0, r1 in expert_runs(counts, matmul.group_rows):
        run_mlp(experts, matmul, first, end, starts, x[r0:r1])


def _weight_bytes(experts: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in experts.parameters())


def _read_weights(experts: torch.nn.Module) -> None:
    """One streaming pass over every expert weight (memory-bound: what reading them costs): a
    byte-wise max, which runs at memory speed in any dtype (a float32 sum of bfloat16 weights
    would convert every element and be bound by that arithmetic, not by memory)."""
    for p in experts.parameters():
        p.detach().contiguous().view(torch.uint8).amax()


def _touched_fraction(index: torch.Tensor, num_experts: int) -> float:
    """Share of the experts that receive at least one row. index [T, K], sentinel N."""
    return int((count_ids(index, num_experts) > 0).sum()) / num_experts


def bench_layer(shape: LayerShape, cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    dtype = getattr(torch, cfg.dtype)
    experts = make_experts(shape, dtype, device, cfg.seed)
    tokens = make_tokens(shape, dtype, device, cfg.seed)
    n, kn = shape.num_experts, shape.top_k
    cases: dict[str, tuple[torch.Tensor, torch.Tensor]] = {"fixed": (tokens.index, tokens.weights)}
    flops: dict[str, float] = {"fixed": 1.0}
    for mix in default_mixes(kn):
        k = k_per_token(mix, shape.tokens, cfg.seed)
        if bool((k >= kn).all()):
            continue  # too few tokens for this mix to drop anything (e.g. half of T=1)
        cases[mix.name] = apply_k(tokens.index, tokens.weights, k, n)
        flops[mix.name] = flop_ratio(k, kn)

    variants: dict[str, Callable[..., torch.Tensor]] = {"adaptk": _adaptk}
    for kernel in cfg.kernels:
        fn = kernel_variant(experts, kernel) if kernel != "exact" else None
        if fn is not None:
            variants[variant_name(kernel)] = fn
    if cfg.strategies:
        variants.update(STRATEGIES)
    bytes_per = experts.gate_up_proj[0].numel() * experts.gate_up_proj.element_size() * 1.5
    for name in cfg.backends:
        if name == "batched_mm" and shape.tokens * kn * bytes_per > cfg.max_batched_bytes:
            log.info("skipping batched_mm at %s: it would gather %.1f GiB of weights", shape.label,
                     shape.tokens * kn * bytes_per / 2**30)
            continue
        variants[f"transformers {name}"] = transformers_backend(name)

    fns: dict[str, Callable[[], Any]] = {}
    for vname, fn in variants.items():
        for cname, (index, weights) in cases.items():
            if vname in STRATEGIES and cname == "fixed":
                continue  # strategies only differ from the back-end when slots are dropped
            fns[f"{vname} | {cname}"] = (lambda fn=fn, i=index, w=weights: fn(experts, tokens.hidden, i, w))
    bound_kernel = next((k for k in reversed(cfg.kernels) if variant_name(k) in variants), "exact")
    if device.type == "cpu":
        fns.update(_matmul_only_fns(experts, tokens.hidden, cases, bound_kernel))
        fns["read every expert's weights"] = lambda: _read_weights(experts)
    first_mix = next((c for c in cases if c != "fixed"), "fixed")  # the k mix for routing and memory
    with contextlib.ExitStack() as stack:
        if cfg.routing:
            routers = _routing_fns(shape, tokens, kn, stack)
            fns.update(routers)
            # after the layer of the kernel the matmul bound uses (native where it builds)
            layer = fns[f"{variant_name(bound_kernel)} | {first_mix}"]
            fns.update(_after_layer_fns(routers, layer, cfg.clock, 8 if shape.tokens <= 16 else 1, device))
        samples = interleaved_samples(fns, cfg.trials, cfg.warmup, device, clock=cfg.clock)
    times = {name: statistics.median(s) for name, s in samples.items()}

    result: dict[str, Any] = {"shape": shape.__dict__ | {"label": shape.label}, "dtype": cfg.dtype,
                              "flop_ratio": flops, "seconds": times}
    fixed = times["adaptk | fixed"]
    # every back-end against its own fixed-k time; the strategies against adaptk's
    result["ratios"] = {
        f"{v} | {c}": times[f"{v} | {c}"] / (fixed if v in STRATEGIES else times[f"{v} | fixed"])
        for v in variants for c in cases if c != "fixed" and f"{v} | {c}" in times
    }
    # the spread of the adaptk kernels' ratios: quartiles of the per-trial paired ratios
    result["ratio_quartiles"] = {
        f"{v} | {c}": paired_quartiles(samples[f"{v} | {c}"], samples[f"{v} | fixed"])
        for v in variants if v not in STRATEGIES and not v.startswith("transformers")
        for c in cases if c != "fixed"
    }
    if device.type == "cpu":
        result["matmul_bound"] = {"kernel": bound_kernel, **{
            c: times[f"matmuls only | {c}"] / times["matmuls only | fixed"] for c in cases if c != "fixed"}}
        # each expert a call touches is read from memory at least once: at the speed one full
        # read of the weights runs at (a reduction over them), the time that takes / fixed-k time
        fastest_fixed = min(times[f"{v} | fixed"] for v in variants if v not in STRATEGIES)
        read = times["read every expert's weights"]
        result["read_bound"] = {
            c: max(flops[c], read * _touched_fraction(index, n) / fastest_fixed)
            for c, (index, _) in cases.items() if c != "fixed"}
        result["read_bound"]["weights_gb_per_s"] = _weight_bytes(experts) / read / 1e9
    if cfg.routing:
        # against the fastest adaptk variant: the faster the experts, the larger routing's share
        kernel_variants = [v for v in variants if v.startswith("adaptk") and v not in STRATEGIES]
        adaptive_layer = min(times[f"{v} | {first_mix}"] for v in kernel_variants)
        result["routing"] = _shares({n: times[n] for n in routers}, adaptive_layer)
        # one call right after the layer, as in a model step (the caches cold): the share there
        result["routing"]["after_layer"] = _shares({n: times[f"{n} after a layer call"] for n in routers},
                                                   adaptive_layer)
    if cfg.memory:
        mix_name = first_mix
        result["peak_bytes"] = {
            "fixed": peak_bytes(lambda: _adaptk(experts, tokens.hidden, *cases["fixed"]), device),
            mix_name: peak_bytes(lambda: _adaptk(experts, tokens.hidden, *cases[mix_name]), device),
            "transformers grouped_mm fixed": peak_bytes(
                lambda: transformers_backend("grouped_mm")(experts, tokens.hidden, *cases["fixed"]), device),
        }
    return result

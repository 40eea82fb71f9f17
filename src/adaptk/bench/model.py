"""End to end on a model: prefill and decode tokens/s, native k vs an adaptive policy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from adaptk.bench.config import BenchConfig, ModelBench
from adaptk.bench.timing import CLOCKS, interleaved

log = logging.getLogger(__name__)


def _default_path() -> str | None:
    try:
        from adaptk.assets import default_model_path
    except ImportError:
        return None
    try:
        path = default_model_path()
    except Exception as exc:  # the asset may be absent in a source checkout
        log.info("no shipped default model: %s", exc)
        return None
    return str(path) if path is not None and Path(path).exists() else None


def _random_mixtral(hidden: int, intermediate: int, layers: int, heads: int) -> dict[str, int]:
    return dict(vocab_size=1024, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=heads // 2, num_local_experts=8,
                num_experts_per_tok=2, max_position_embeddings=512)


# random-weight Mixtrals for timing only (quality is meaningless): the second has the
# "mixtral-like" layer shape of the layer bench (hidden 1024, width 3584), so that expert
# weights, not Python, dominate a decode step, as in real MoE models
SYNTHETIC_MODELS: dict[str, dict[str, int]] = {
    "random-mixtral-h512": _random_mixtral(512, 1408, 4, 8),
    "random-mixtral-h1024": _random_mixtral(1024, 3584, 2, 8),
}


def load_model(spec: str | None, dtype: torch.dtype) -> tuple[torch.nn.Module, str]:
    """``spec``: a model folder, "default" or None (the shipped default model, else
    random-mixtral-h512), or a name in ``SYNTHETIC_MODELS``."""
    import transformers

    if spec in SYNTHETIC_MODELS:
        torch.manual_seed(0)
        config = transformers.MixtralConfig(**SYNTHETIC_MODELS[spec])
        model = transformers.AutoModelForCausalLM.from_config(config).to(dtype)
        c = SYNTHETIC_MODELS[spec]
        return model.eval(), (f"{spec} (random weights; H{c['hidden_size']}, I{c['intermediate_size']}, "
                              f"{c['num_hidden_layers']} layers, 8x top-2)")
    from adaptk.loading.model import load_model as load_model_arg

    if spec in (None, "default") and _default_path() is None:
        return load_model("random-mixtral-h512", dtype)
    # a folder, "default" or a hub name: read as every command reads --model
    model, source = load_model_arg(spec, dtype)
    return model, source.describe()


def median_entropy_policy(model: torch.nn.Module, input_ids: torch.Tensor):
    """EntropyThreshold k in {1, native k} with each layer's threshold at its median entropy on
    ``input_ids``: about half the tokens of every layer keep one expert."""
    from adaptk.models.registry import find_moe_layers
    from adaptk.routing.entropy import routing_entropy
    from adaptk.routing.policies import EntropyThreshold

    layers = find_moe_layers(model)
    medians: list[float] = [0.0] * len(layers)
    hooks = []
    for i, layer in enumerate(layers):
        def hook(module, args, layer=layer, i=i):
            scores = layer.family.scores(module, args[0])
            medians[i] = float(routing_entropy(scores.probs).median())
        hooks.append(layer.router.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model(input_ids)
    finally:
        for h in hooks:
            h.remove()
    native_k = layers[0].native_k
    return EntropyThreshold((1, native_k), tuple((m,) for m in medians)), native_k


def _prefill(model, ids):
    return model(ids, use_cache=False)


def _decode(model, ids, steps: int, clock: str) -> float:
    """Seconds for ``steps`` one-token steps after an untimed prefill."""
    now = CLOCKS[clock]
    out = model(ids, use_cache=True)
    cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    start = now()
    for _ in range(steps):
        out = model(nxt, past_key_values=cache, use_cache=True)
        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return now() - start


def bench_model(cfg: BenchConfig, spec: str | None = None) -> dict[str, Any]:
    """Prefill and decode tokens/s of the model ``spec`` (see ``load_model``): unpatched, and
    patched with fixed native k and with an entropy policy, under every kernel of ``cfg``."""
    import adaptk
    from adaptk.bench.layer import kernel_runs

    mb: ModelBench = cfg.model
    model, source = load_model(spec, getattr(torch, cfg.dtype))
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(cfg.seed)
    calib = torch.randint(0, vocab, (4, mb.prompt_len), generator=g)
    policy, native_k = median_entropy_policy(model, calib)
    experts = find_experts(model)
    kernels = [k for k in cfg.kernels if kernel_runs(experts, k)]
    arms: dict[str, tuple[Any, str]] = {"unpatched": (None, "exact")}
    for kernel in kernels:
        suffix = "" if kernel == "exact" else f", {kernel}"
        arms[f"adaptk fixed k={native_k}{suffix}"] = (adaptk.FixedTopK(native_k), kernel)
        arms[f"adaptk entropy policy{suffix}"] = (policy, kernel)

    keep_packed = []  # kernels kept alive between arms, so that patching an arm does not re-pack
    for kernel in kernels:
        with adaptk.patch(model, adaptk.FixedTopK(native_k), kernel=kernel) as handle:
            keep_packed.append(handle.kernels)

    def run(arm, fn):
        arm_policy, kernel = arms[arm]
        if arm_policy is None:
            return fn()
        with adaptk.patch(model, arm_policy, kernel=kernel, routing=routing_for(kernel)):
            return fn()

    result: dict[str, Any] = {"model": source, "policy": policy.to_dict(), "prompt_len": mb.prompt_len,
                              "decode_steps": mb.decode_steps, "rows": []}
    for batch in mb.batch_sizes:
        ids = torch.randint(0, vocab, (batch, mb.prompt_len), generator=g)
        fns = {}
        for arm in arms:
            fns[f"prefill | {arm}"] = lambda arm=arm, ids=ids: run(arm, lambda: _prefill(model, ids))
            fns[f"decode | {arm}"] = lambda arm=arm, ids=ids: run(arm, lambda: _decode(model, ids, mb.decode_steps, cfg.clock))
        times = interleaved(fns, cfg.trials, cfg.warmup, clock=cfg.clock)
        with torch.inference_mode(), adaptk.patch(model, policy) as handle:
            _prefill(model, ids)
            avg_k = handle.stats().average_k
        for arm, (arm_policy, kernel) in arms.items():
            result["rows"].append({
                "batch": batch, "arm": arm, "kernel": kernel, "routing": routing_for(kernel) if arm_policy else None,
                "prefill_tok_s": batch * mb.prompt_len / times[f"prefill | {arm}"],
                "decode_tok_s": batch * mb.decode_steps / times[f"decode | {arm}"],
                "avg_k_prefill": avg_k if arm_policy is policy else float(native_k),
            })
    return result


def routing_for(kernel: str) -> str:
    """The router the arms of a kernel run: the native kernel's arms (the inexact, fastest CPU
    configuration) the native router too; the others the default fused step (the torch ops' bits)."""
    return "native" if kernel == "native" else "fused"


def find_experts(model: torch.nn.Module) -> torch.nn.Module:
    from adaptk.models.registry import find_moe_layers

    return find_moe_layers(model)[0].experts

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


def load_model(path: str | None, dtype: torch.dtype) -> tuple[torch.nn.Module, str]:
    """The model at ``path``, else the shipped default model, else a tiny random Mixtral."""
    import transformers

    path = path or _default_path()
    if path is not None:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return model.eval(), str(path)
    config = transformers.MixtralConfig(
        vocab_size=1024, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).to(dtype)
    return model.eval(), "tiny random Mixtral (H512, I1408, 4 layers, 8x top-2)"


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


def bench_model(cfg: BenchConfig) -> dict[str, Any]:
    import adaptk

    mb: ModelBench = cfg.model
    model, source = load_model(cfg.model_path, getattr(torch, cfg.dtype))
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(cfg.seed)
    calib = torch.randint(0, vocab, (4, mb.prompt_len), generator=g)
    policy, native_k = median_entropy_policy(model, calib)
    arms = {"unpatched": None, f"adaptk fixed k={native_k}": adaptk.FixedTopK(native_k), "adaptk entropy policy": policy}

    def run(arm, fn):
        if arms[arm] is None:
            return fn()
        with adaptk.patch(model, arms[arm]):
            return fn()

    result: dict[str, Any] = {"model": source, "policy": policy.to_dict() if hasattr(policy, "to_dict") else repr(policy),
                              "prompt_len": mb.prompt_len, "decode_steps": mb.decode_steps, "rows": []}
    for batch in mb.batch_sizes:
        ids = torch.randint(0, vocab, (batch, mb.prompt_len), generator=g)
        fns = {}
        for arm in arms:
            fns[f"prefill | {arm}"] = lambda arm=arm: run(arm, lambda: _prefill(model, ids))
            fns[f"decode | {arm}"] = lambda arm=arm: run(arm, lambda: _decode(model, ids, mb.decode_steps, cfg.clock))
        times = interleaved(fns, cfg.trials, cfg.warmup, clock=cfg.clock)
        with torch.inference_mode(), adaptk.patch(model, policy) as handle:
            _prefill(model, ids)
            avg_k = handle.stats().average_k
        for arm in arms:
            result["rows"].append({
                "batch": batch, "arm": arm,
                "prefill_tok_s": batch * mb.prompt_len / times[f"prefill | {arm}"],
                "decode_tok_s": batch * mb.decode_steps / times[f"decode | {arm}"],
                "avg_k_prefill": avg_k if arm == "adaptk entropy policy" else float(native_k),
            })
    return result

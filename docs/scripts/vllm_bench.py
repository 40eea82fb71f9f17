"""Prefill and decode tokens/s of vLLM: plain, adaptk monitor-only, adaptk FixedTopK at the native k,
and an entropy policy, side by side in one run (each configuration in its own vLLM process, in turn).

    python docs/scripts/vllm_bench.py --model default --dtype float32 --prompt-tokens 256
    python docs/scripts/vllm_bench.py --mixtral-shaped /tmp/mixtral-shaped --layers 2 --dtype float32

``--mixtral-shaped DIR`` first saves (unless DIR has one) a Mixtral-shaped model with random
weights: hidden 1024, expert width 3584, 8 experts top-2, ``--layers`` layers, routers scaled by
``--router-scale`` so that routing is peaked, the default model's tokenizer. The entropy policy
keeps 1 expert below ``--alpha`` x log N nats and 2 above; the table reports the average k it gave.
Prefill: ``--batch`` prompts of ``--prompt-tokens`` random tokens, one generated token each;
decode: ``--batch`` prompts of 8 tokens, ``--decode-tokens`` generated each (ignore_eos), so the
decode rate includes one short prefill. Timings are the best of ``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _worker(args) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=args.model, dtype=args.dtype, enforce_eager=True, seed=0,
              max_model_len=max(args.prompt_tokens + 1, 8 + args.decode_tokens),
              max_num_seqs=max(args.batch))
    import torch

    g = torch.Generator().manual_seed(0)
    vocab = llm.get_tokenizer().vocab_size
    out = {}
    for b in args.batch:
        long = [TokensPrompt(prompt_token_ids=torch.randint(1, vocab, (args.prompt_tokens,), generator=g).tolist())
                for _ in range(b)]
        short = [TokensPrompt(prompt_token_ids=torch.randint(1, vocab, (8,), generator=g).tolist()) for _ in range(b)]
        one = SamplingParams(temperature=0.0, max_tokens=1)
        many = SamplingParams(temperature=0.0, max_tokens=args.decode_tokens, ignore_eos=True)
        for name, prompts, params, tokens in (("prefill", long, one, b * args.prompt_tokens),
                                              ("decode", short, many, b * args.decode_tokens)):
            times = []
            for _ in range(args.repeats + 1):
                llm.reset_prefix_cache()
                t = time.perf_counter()
                llm.generate(prompts, params, use_tqdm=False)
                times.append(time.perf_counter() - t)
            out[f"{name}@{b}"] = tokens / min(times[1:])
    try:
        from adaptk.engines.vllm import hooks

        st = hooks.state()
    except ImportError:
        st = None
    if st is not None:
        reports = [m.report() for m in st.monitors.values()]
        toks = sum(r.tokens for r in reports)
        out["average_k"] = sum(r.average_k * r.tokens for r in reports) / toks
        out["executed/native"] = sum(r.executed_pairs for r in reports) / sum(r.native_pairs for r in reports)
    print("RESULT " + json.dumps(out))


def _mixtral_shaped(path: Path, layers: int, router_scale: float) -> None:
    import shutil

    import torch
    import transformers

    from adaptk.assets import default_model_path

    if (path / "config.json").is_file():
        return
    tok = default_model_path()
    vocab = json.loads((tok / "config.json").read_text())["vocab_size"]
    cfg = transformers.MixtralConfig(vocab_size=vocab, hidden_size=1024, intermediate_size=3584, num_hidden_layers=layers,
                                     num_attention_heads=8, num_key_value_heads=8, num_local_experts=8,
                                     num_experts_per_tok=2, max_position_embeddings=1024,
                                     architectures=["MixtralForCausalLM"], bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gate.weight"):
                p.mul_(router_scale)  # peaked routers: a spread of routing entropies
    model.save_pretrained(path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok / f, path / f)


def _policies(model: str, alpha: float, out: Path) -> dict[str, str | None]:
    from transformers import AutoConfig

    from adaptk.calibrate import make_policy_file, save_policy_file
    from adaptk.engines.vllm import served
    from adaptk.routing import EntropyThreshold, FixedTopK

    meta = served.meta_model(AutoConfig.from_pretrained(model))
    layers = served.served_layers(meta)
    n, k = next(iter(layers.values())).num_experts, next(iter(layers.values())).native_k
    found = {"plain": None, "monitor": "monitor"}
    for name, policy in (("fixed", FixedTopK(k)), ("entropy", EntropyThreshold.from_fractions([1, k], [alpha], n))):
        found[name] = str(save_policy_file(make_policy_file(meta, policy, {"strategy": "manual"}),
                                           out / f"{name}.json", overwrite=True))
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--mixtral-shaped", type=Path, help="save (if absent) and bench a Mixtral-shaped model here")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--router-scale", type=float, default=30.0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return _worker(args)
    if args.mixtral_shaped is not None:
        _mixtral_shaped(args.mixtral_shaped, args.layers, args.router_scale)
        args.model = str(args.mixtral_shaped)
    elif args.model == "default":
        from adaptk.assets import default_model_path

        args.model = str(default_model_path())
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, policy in _policies(args.model, args.alpha, Path(tmp)).items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTK_")}
            env.update(VLLM_CPU_KVCACHE_SPACE=env.get("VLLM_CPU_KVCACHE_SPACE", "2"),
                       VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CACHE_ROOT=str(Path(tmp) / "cache"))
            if policy == "monitor":
                env["ADAPTK_MONITOR"] = "1"
            elif policy is not None:
                env["ADAPTK_POLICY"] = policy
            cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--dtype", args.dtype,
                   "--prompt-tokens", str(args.prompt_tokens), "--decode-tokens", str(args.decode_tokens),
                   "--repeats", str(args.repeats), "--batch", *map(str, args.batch)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            rows[name] = json.loads(line[len("RESULT "):])
    keys = [k for k in rows["plain"]]
    print(f"model {args.model}, {args.dtype}; tokens/s (ratio to plain vLLM)")
    print("| config | " + " | ".join(keys) + " | average k | executed/native |")
    print("|---" * (len(keys) + 3) + "|")
    for name, r in rows.items():
        cells = [f"{r[k]:.1f}" + ("" if name == "plain" else f" ({r[k] / rows['plain'][k]:.3f})") for k in keys]
        extra = [f"{r['average_k']:.3f}", f"{r['executed/native']:.3f}"] if "average_k" in r else ["native", "1"]
        print(f"| {name} | " + " | ".join(cells + extra) + " |")


if __name__ == "__main__":
    main()

"""``adaptk inspect``: list a model's MoE layers; optionally route a text through a policy."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="local path or hub name (default: the shipped model)")
    p.add_argument("--text", help="a text to route (tokenised with the model's tokenizer)")
    p.add_argument("--text-file", help="a text file to route (first --max-tokens tokens)")
    p.add_argument("--max-tokens", type=int, default=2048)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fixed", type=int, metavar="K", help="FixedTopK(K)")
    g.add_argument("--alphas", type=float, nargs="+", metavar="A", help="EntropyThreshold.from_fractions with --k-values")
    g.add_argument("--top-p", type=float, metavar="P", help="TopP(P)")
    g.add_argument("--ratio-skip", type=float, metavar="BETA", help="RatioSkip(BETA)")
    p.add_argument("--k-values", type=int, nargs="+", default=[1, 2], help="k values for --alphas")
    p.add_argument("--json", action="store_true", help="print the stats as JSON")


def _policy(args, num_experts: int):
    from adaptk import EntropyThreshold, FixedTopK, RatioSkip, TopP

    if args.fixed is not None:
        return FixedTopK(args.fixed)
    if args.alphas is not None:
        return EntropyThreshold.from_fractions(args.k_values, args.alphas, num_experts)
    if args.top_p is not None:
        return TopP(args.top_p)
    if args.ratio_skip is not None:
        return RatioSkip(args.ratio_skip)
    return None


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    import adaptk
    from adaptk.data.text import read_text_file
    from adaptk.loading.model import load_model, load_tokenizer
    from adaptk.models import find_moe_layers

    text = args.text if args.text is not None else (read_text_file(args.text_file) if args.text_file else None)
    model, source = load_model(args.model)
    layers = find_moe_layers(model)
    print(f"{type(model).__name__}: {len(layers)} MoE layers")
    for layer in layers:
        print(f"  {layer.index:>3} {layer.name:<32} family={layer.family.name:<14} N={layer.num_experts:<4} k={layer.native_k}")
    policy = _policy(args, layers[0].num_experts)
    if policy is None or text is None:
        return 0
    tok = load_tokenizer(source)
    ids = tok(text, return_tensors="pt").input_ids[:, : args.max_tokens]
    with torch.no_grad(), adaptk.patch(model, policy) as handle:
        model(ids)
        report = handle.stats()
    print(f"policy: {policy}")
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0

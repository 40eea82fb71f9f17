"""``adaptk inspect``: list a model's MoE layers; optionally route a text through a policy."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="local path or hub name (default: the shipped model)")
    p.add_argument("--text", help="a text to route (tokenised with the model's tokenizer)")
    p.add_argument("--text-file", help="a text file to route (first --max-tokens tokens)")
    p.add_argument("--max-tokens", type=int, default=2048)
    from adaptk.rules import flagged_rules

    g = p.add_mutually_exclusive_group()
    for rule in flagged_rules():  # one flag per rule that declares one
        f = rule.flag
        g.add_argument(f.option, type=f.type, nargs=f.nargs, metavar=f.metavar, help=f.help)
    p.add_argument("--k-values", type=int, nargs="+", default=[1, 2], help="k values for --alphas")
    p.add_argument("--json", action="store_true", help="print the stats as JSON")


def _policy(args, num_experts: int):
    from adaptk.rules import flagged_rules

    for rule in flagged_rules():
        value = getattr(args, rule.flag.dest)
        if value is not None:
            return rule.flag.build(value, args, num_experts)
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

"""``adaptk train``: train a small MoE (or dense) causal LM with routing controls. See docs/train.md."""

from __future__ import annotations

import argparse

# fallback defaults of the options a preset's recipe may set (shown as None to argparse so that
# an option the user gave always wins over the preset's recipe)
FALLBACK = dict(steps=1000, threads=None, entropy_coef=0.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="mixtral-mini",
                        help="mixtral-mini | olmoe-mini | qwen-moe-mini | dense-mini (default mixtral-mini)")
    parser.add_argument("--corpus", default="stdlib", choices=("stdlib", "gutenberg"), help="named training corpus")
    parser.add_argument("--text-file", action="append", default=[], metavar="PATH",
                        help="train on local UTF-8 text files instead (repeatable; lines split 90/5/5 by position)")
    parser.add_argument("--out", required=True, help="output folder (model, tokenizer, model card, logs)")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's recipe, else 1000")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the preset's recipe, else torch's choice)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing --out folder (an earlier run's, or any other): adaptk's own "
                             "earlier files are replaced, nothing else in it is touched")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last.pt")
    parser.add_argument("--allow-changed-config", action="store_true",
                        help="with --resume: continue even if batch size, lr, seed, routing controls, text, ... "
                             "differ from the checkpoint's (recorded under 'resumed' in train_summary.json)")
    parser.add_argument("--log-every", type=int, default=25, help="health log interval (steps)")
    parser.add_argument("--ckpt-every", type=int, default=200, help="checkpoint interval (steps)")
    parser.add_argument("--eval-batches", type=int, default=40, help="validation batches (of up to 8 windows) of the training-time check and the "
                             "card's routing statistics")
    parser.add_argument("--heldout-tokens", type=int, default=16384,
                        help="tokens per split of the card's valid and test perplexity: a spread sample over every "
                             "document of the split, as `adaptk evaluate --sample spread` draws it")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep <out>/checkpoints after the run")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g = parser.add_argument_group("routing controls")
    g.add_argument("--balance-coef", type=float, default=0.01, help="Switch load-balancing loss weight")
    g.add_argument("--z-loss-coef", type=float, default=0.001, help="router z-loss weight")
    g.add_argument("--entropy-coef", type=float, default=None,
                   help="routing entropy term: > 0 spreads routing, < 0 sharpens it (default: the preset's recipe, else 0)")
    g.add_argument("--aux-free-bias-speed", type=float, default=0.0, help="DeepSeek-V3 bias balancing speed gamma")
    g.add_argument("--jitter", type=float, default=0.0, help="multiplicative input jitter eps")
    g.add_argument("--logit-noise", type=float, default=0.0, help="Gaussian router logit noise std")
    g.add_argument("--temperature-start", type=float, default=1.0)
    g.add_argument("--temperature-end", type=float, default=1.0)
    g.add_argument("--dense-steps", type=int, default=0, help="route to all experts for this many steps")
    g.add_argument("--sparsify-steps", type=int, default=0, help="then anneal k linearly to the native k")
    g.add_argument("--capacity-factor", type=float, default=0.0, help="expert capacity factor (0 = unlimited)")


def run(args: argparse.Namespace) -> int:
    import logging

    from adaptk.train import RoutingControls, TrainConfig, train
    from adaptk.train.presets import PRESETS

    recipe = PRESETS[args.preset].recipe or {} if args.preset in PRESETS else {}
    for key, fallback in FALLBACK.items():
        if getattr(args, key) is None:
            setattr(args, key, recipe.get(key, fallback))

    controls = RoutingControls(
        balance_coef=args.balance_coef, z_loss_coef=args.z_loss_coef, entropy_coef=args.entropy_coef,
        aux_free_bias_speed=args.aux_free_bias_speed, jitter=args.jitter, logit_noise=args.logit_noise,
        temperature_start=args.temperature_start, temperature_end=args.temperature_end,
        dense_steps=args.dense_steps, sparsify_steps=args.sparsify_steps, capacity_factor=args.capacity_factor,
    )
    cfg = TrainConfig(
        preset=args.preset, out=args.out, corpus=args.corpus, text_files=tuple(args.text_file),
        steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
        warmup_steps=args.warmup_steps, vocab_size=args.vocab_size, seed=args.seed, threads=args.threads,
        overwrite=args.overwrite, resume=args.resume, allow_changed_config=args.allow_changed_config, log_every=args.log_every, ckpt_every=args.ckpt_every,
        eval_batches=args.eval_batches, heldout_tokens=args.heldout_tokens,
        keep_checkpoints=args.keep_checkpoints,
        progress=not args.no_progress, controls=controls,
    )
    from adaptk.train.loop import check_out

    check_out(cfg)  # before any work
    out = train(cfg)
    logging.getLogger(__name__).info("model saved to %s", out)
    print(out)
    return 0

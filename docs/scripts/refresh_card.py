"""Recompute the held-out valid/test perplexity of a trained model folder and rewrite its card.

    python docs/scripts/refresh_card.py src/adaptk/assets/default-model [--tokens 16384] [--threads 1]

Prints the new numbers; the weights are not touched (``adaptk.train.refresh.refresh_card``).
"""

from __future__ import annotations

import argparse

import torch

from adaptk.train.heldout import CARD_TOKENS
from adaptk.train.refresh import refresh_card


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="+", help="model folders written by `adaptk train`")
    p.add_argument("--tokens", type=int, default=CARD_TOKENS, help="tokens per split of the spread sample")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for folder in args.folder:
        s = refresh_card(folder, args.tokens)
        cells = []
        for split in ("valid", "test"):
            h = s["heldout"][split]
            cells.append(f"{split} ppl {h['ppl']:.2f} [{h['ppl_lo']:.2f}, {h['ppl_hi']:.2f}] "
                         f"({h['sample']['tokens']} tokens, {h['documents']} documents)" if h else f"{split}: none")
        print(f"{folder}: " + "; ".join(cells))


if __name__ == "__main__":
    main()

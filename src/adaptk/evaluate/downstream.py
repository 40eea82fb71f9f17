"""The ``downstream`` section: multiple-choice accuracy at matched k, beside perplexity.

Items come from the test split of the evaluation text (``adaptk.data.cloze``: last-word choice
for prose, next-line choice for source code). Native top-k, the calibrated policy and every
policy the side-by-side sweep fitted (its rows keep each policy's parameters, so they are
rebuilt here, not refitted) score the same items (``adaptk.measure.choice``); each accuracy
carries its Wilson interval and each difference to native Newcombe's paired score interval
(``adaptk.measure.accuracy``). The average k and compute next to an accuracy are those the same
policy had on the perplexity tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from torch import nn

from adaptk.data.cloze import build_items
from adaptk.engines.transformers.patch import patch
from adaptk.errors import PolicyError
from adaptk.measure import IntervalConfig
from adaptk.measure.accuracy import accuracy_difference, accuracy_interval, mcnemar
from adaptk.measure.choice import TokenItem, accuracy, choice_loglikelihoods, encode_items
from adaptk.routing import Policy, policy_from_dict

log = logging.getLogger(__name__)

# the fields of a perplexity run that a downstream row repeats next to its accuracy
CARRIED = ("compute_fraction", "ppl_increase", "ppl_increase_lo", "ppl_increase_hi")


@dataclass(frozen=True)
class DownstreamTask:
    """Token items of one task and where they came from."""

    name: str
    source: str
    items: tuple[TokenItem, ...]
    n_choices: int


def build_task(docs: Sequence[str], task: str, encode: Callable[[str], Sequence[int]], *, window: int,
               n_items: int = 200, n_choices: int = 4, seed: int = 0, source: str = "") -> DownstreamTask:
    """Items of ``task`` from the documents ``docs`` in tokens of ``encode``; distractors matched
    to the true continuation in token count; each context cut to the window."""
    length = lru_cache(maxsize=None)(lambda s: len(encode(s)))
    items = build_items(docs, task, n_items, n_choices=n_choices, seed=seed, length=length)
    margin = 16 * window  # characters: more than a window of tokens of any text (a token holds >= 1 character)
    cut = [replace(it, context=it.context[-margin:]) for it in items]
    return DownstreamTask(task, source, tuple(encode_items(cut, encode, window)), n_choices)


def _key(policy: Policy) -> str:
    return json.dumps(policy.to_dict(), sort_keys=True)


def sweep_policies(pareto: dict | None) -> list[tuple[dict, Policy]]:
    """(row, policy) of every side-by-side row whose policy can be rebuilt from its parameters."""
    out = []
    for row in (pareto or {}).get("rows") or []:
        try:
            out.append((row, policy_from_dict(row["policy"])))
        except (PolicyError, KeyError) as exc:
            log.warning("downstream: cannot rebuild the policy of %s (%s); left out", row.get("rule"), exc)
    return out


@torch.no_grad()
def downstream_section(model: nn.Module, task: DownstreamTask, runs: Sequence[tuple[str, float | None, Policy, dict]],
                       cfg: IntervalConfig, *, progress: bool = False, batch_size: int = 16) -> dict:
    """Score every run (name, budget fraction, policy, its perplexity-run fields) on the task's items;
    the first run is the reference (native top-k) of every difference."""
    import time

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    correct: dict[str, torch.Tensor] = {}
    rows = []
    for name, budget, policy, fields in tqdm(runs, desc="downstream", disable=not progress):
        key = _key(policy)
        if key not in correct:  # the same policy (native k among the fixed rows) is scored once
            with patch(model, policy):
                correct[key] = accuracy(choice_loglikelihoods(model, task.items, batch_size=batch_size), task.items)
        c = correct[key]
        ref = correct[_key(runs[0][2])]
        acc = accuracy_interval(c, cfg.level)
        row = {"rule": name, "budget_fraction": budget, "average_k": fields.get("average_k", fields.get("eval_avg_k")),
               **{k: fields[k] for k in CARRIED if k in fields},
               "accuracy": acc.estimate, "accuracy_lo": acc.lo, "accuracy_hi": acc.hi,
               "accuracy_difference": 0.0, "difference_lo": None, "difference_hi": None, "distinguishable": False}
        if rows:  # the reference itself has no difference to show
            diff = accuracy_difference(c, ref, cfg.level)
            test = mcnemar(c, ref)
            row.update(accuracy_difference=diff.estimate, difference_lo=diff.lo, difference_hi=diff.hi,
                       distinguishable=diff.excludes_zero() and test["p"] < 1 - cfg.level,
                       right_only_here=test["only_a"],
                       right_only_native=test["only_b"], mcnemar_p=test["p"])
        rows.append(row)
    return {"task": task.name, "source": task.source, "items": len(task.items), "choices": task.n_choices,
            "chance": 1.0 / task.n_choices, "interval": {"level": cfg.level, "accuracy": "wilson",
                                                         "difference": "newcombe paired score (method 10)"},
            "policies_scored": len(correct), "seconds": time.perf_counter() - t0, "rows": rows}

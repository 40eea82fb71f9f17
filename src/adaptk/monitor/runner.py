"""Route a text through a model under a monitor: tokenise, chunk, batch, forward under no_grad."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from adaptk.monitor.errors import MonitorError
from adaptk.monitor.monitor import MonitorConfig, RoutingMonitor
from adaptk.monitor.report import MonitorReport

log = logging.getLogger(__name__)


def chunks(ids: list[int], window: int, batch_size: int, max_tokens: int | None = None) -> Iterator[torch.Tensor]:
    """Token ids -> batches [B, window] of consecutive windows (the last short window dropped,
    unless it is the only one)."""
    if max_tokens is not None:
        ids = ids[:max_tokens]
    rows = [ids[i: i + window] for i in range(0, len(ids) - window + 1, window)] or ([ids] if ids else [])
    for i in range(0, len(rows), batch_size):
        yield torch.tensor(rows[i: i + batch_size], dtype=torch.long)  # [B, window]


def monitor_ids(model: nn.Module, ids: list[int], monitor: RoutingMonitor | None = None, *, window: int = 256,
                batch_size: int = 8, max_tokens: int | None = None) -> RoutingMonitor:
    """Run ``ids`` through ``model`` with ``monitor`` attached for the duration; returns it."""
    from adaptk.measure import check_window

    monitor = monitor or RoutingMonitor()
    used = len(ids) if max_tokens is None else min(len(ids), max_tokens)
    check_window(model, min(window, used))
    device = next(model.parameters()).device
    n = 0
    with monitor.attach(model), torch.no_grad():
        for batch in chunks(ids, window, batch_size, max_tokens):
            model(input_ids=batch.to(device))
            n += batch.numel()
    if n == 0:
        raise MonitorError("the text has no tokens to route")
    log.info("routed %d tokens", n)
    return monitor


def monitor_text(model_dir: str | Path, text: str, *, policy=None, window: int | None = None, batch_size: int = 8,
                 max_tokens: int | None = None, config: MonitorConfig | None = None,
                 strict: bool = False) -> MonitorReport:
    """Load ``model_dir`` (model and tokenizer; a folder, "default" or a hub name, as every command
    reads ``--model``), optionally patch it with ``policy`` (a policy, or the path of an ``adaptk
    calibrate`` policy file, checked against the model; ``strict``: refuse one calibrated on other
    weights), and return the routing statistics of ``text``. ``window``: tokens per sequence (None:
    256, or the shorter training length the model folder records)."""
    import adaptk
    from adaptk.loading.model import load_model_and_tokenizer

    model, tok, _ = load_model_and_tokenizer(str(model_dir))
    if window is None:
        from adaptk.measure import default_window

        window = default_window(model, 256)
    if isinstance(policy, str | Path):
        from adaptk.calibrate import load_policy

        policy = load_policy(policy, model, strict=strict)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    monitor = RoutingMonitor(config)
    if policy is not None:
        with adaptk.patch(model, policy):
            monitor_ids(model, ids, monitor, window=window, batch_size=batch_size, max_tokens=max_tokens)
    else:
        monitor_ids(model, ids, monitor, window=window, batch_size=batch_size, max_tokens=max_tokens)
    return monitor.compute()

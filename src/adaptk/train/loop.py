"""``train(TrainConfig) -> Path``: the training loop."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptk.data.corpus import Corpus, load_corpus, split_lines, text_file_splits
from adaptk.data.tokenizer import encode, load_tokenizer, train_bpe
from adaptk.models import find_moe_layers
from adaptk.outputs import check_folder, finish_folder, prepare_folder, snapshot
from adaptk.train import checkpoint as ckpt
from adaptk.train.batches import TokenWindows
from adaptk.train.config import TrainConfig
from adaptk.train.controls import aux_free_bias_update
from adaptk.train.errors import OutputExistsError, TrainConfigError
from adaptk.train.health import CollapseDetector, LoadAccumulator, layer_health
from adaptk.train.heldout import HeldoutSpec, heldout_corpora, heldout_results
from adaptk.train.losses import entropy_regulariser, router_z_loss, switch_balance_loss
from adaptk.train.presets import PRESETS, build_model
from adaptk.train.router_wrap import RouterWrapper, RoutingState

log = logging.getLogger(__name__)
HEALTH_FILE = "health.jsonl"
RUN_KIND = "train-run"


@dataclass(frozen=True)
class Texts:
    train: Corpus
    valid: Corpus


def load_texts(cfg: TrainConfig) -> Texts:
    if cfg.text is not None:
        if not cfg.text.strip():
            raise TrainConfigError("the training text is empty; pass a text with content")
        valid = cfg.valid_text if cfg.valid_text is not None else split_lines(cfg.text, "valid")
        if not valid.strip():
            raise TrainConfigError("the validation text is empty; pass valid_text or a longer text")
        return Texts(Corpus("in-memory", "train", cfg.text, 1), Corpus("in-memory", "valid", valid, 1))
    if cfg.text_files:
        return Texts(text_file_splits(list(cfg.text_files), "train"), text_file_splits(list(cfg.text_files), "valid"))
    if cfg.corpus == "wikitext-2":
        load_corpus("wikitext-2", "train")  # raises the clear "never train on WikiText" error
    return Texts(load_corpus(cfg.corpus, "train"), load_corpus(cfg.corpus, "valid"))


def _heldout_corpora(cfg: TrainConfig, texts: Texts) -> dict:
    """The whole valid and test splits of the card's held-out perplexity (``adaptk.train.heldout``)."""
    if cfg.text is not None:
        return heldout_corpora(None, valid=texts.valid)
    return heldout_corpora(None if cfg.text_files else cfg.corpus, cfg.text_files)


def check_out(cfg: TrainConfig) -> None:
    """Validate the output folder without writing (see :mod:`adaptk.outputs`): new or empty; an
    earlier run's folder or any other folder only with --overwrite, which replaces adaptk's files
    in it and never deletes anything else."""
    if cfg.resume:
        return
    try:
        check_folder(cfg.out, RUN_KIND, overwrite=cfg.overwrite, reuse_own=False)
    except OutputExistsError as exc:
        raise OutputExistsError(f"{exc}; or pass --resume to continue a stopped run") from None


def _prepare_out(cfg: TrainConfig) -> dict:
    """Create the output folder (after :func:`check_out`); returns a snapshot for ``finish_folder``.
    Under --overwrite the earlier run's files (listed in its marker) are removed, and a health log
    or checkpoint of the same name is replaced, not continued."""
    if cfg.resume:
        return snapshot(cfg.out)
    check_out(cfg)
    out, before = prepare_folder(cfg.out, RUN_KIND, overwrite=cfg.overwrite, reuse_own=False)
    for same_name in (out / HEALTH_FILE, ckpt.ckpt_path(out)):  # appended to / resumed from: replace
        if same_name.is_file():
            same_name.unlink()
    return before


def _remove_checkpoint(out: Path) -> None:
    """Remove the checkpoint this run wrote, and its folder if nothing else is in it."""
    path = ckpt.ckpt_path(out)
    for p in (path, path.with_suffix(".tmp")):
        p.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # not empty (someone else's files) or already gone


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of ``lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def param_groups(model, weight_decay: float, moe: bool) -> list[dict]:
    """AdamW groups: router weights get no weight decay (decay pulls the logits to zero, i.e. to
    uniform routing); everything else gets ``weight_decay``."""
    routers = {id(layer.router.weight) for layer in find_moe_layers(model)} if moe else set()
    decay = [p for p in model.parameters() if id(p) not in routers]
    no_decay = [p for p in model.parameters() if id(p) in routers]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def token_losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Next-token loss per position. logits [B, S, V], ids [B, S] -> [B, S] (NaN at the last position)."""
    b, s, v = logits.shape
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, v).float(), ids[:, 1:].reshape(-1), reduction="none")
    return torch.cat([ce.view(b, s - 1), torch.full((b, 1), float("nan"))], dim=1)


def _aux_losses(state: RoutingState, wrapper: RouterWrapper | None, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    if wrapper is None:
        return {}
    c = cfg.controls
    bal, z, ent = [], [], []
    for layer, cap in zip(wrapper.layers, state.captured):
        bal.append(switch_balance_loss(cap.probs, cap.indices, layer.num_experts))
        z.append(router_z_loss(cap.raw_logits))
        ent.append(entropy_regulariser(cap.probs))
    out = {"balance": torch.stack(bal).mean(), "z": torch.stack(z).mean(), "entropy_term": torch.stack(ent).mean()}
    out["aux"] = c.balance_coef * out["balance"] + c.z_loss_coef * out["z"] + c.entropy_coef * out["entropy_term"]
    return out


class _Logger:
    """JSONL health log (+ TensorBoard when installed)."""

    def __init__(self, out: Path) -> None:
        self.path = out / HEALTH_FILE
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # tensorboard not installed
            log.debug("tensorboard not installed: JSONL only")

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "loss" in record:
            step = record["step"]
            self.tb.add_scalar("loss/train", record["loss"], step)
            for i, h in enumerate(record.get("layers", [])):
                self.tb.add_scalar(f"routing/entropy/layer{i}", h["entropy_mean"], step)
                self.tb.add_scalar(f"routing/load_cv/layer{i}", h["load_cv"], step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


@torch.no_grad()
def evaluate(model, windows, max_batches: int, moe: bool) -> dict:
    """Perplexity and held-out routing health (native routing, eval mode)."""
    model.eval()
    wrapper = state = None
    if moe:
        from adaptk.train.config import RoutingControls

        state = RoutingState(RoutingControls(balance_coef=0, z_loss_coef=0))
        wrapper = RouterWrapper(model, state)
        loads = [LoadAccumulator(layer.num_experts) for layer in wrapper.layers]
        probs: list[list[torch.Tensor]] = [[] for _ in wrapper.layers]
        idx: list[list[torch.Tensor]] = [[] for _ in wrapper.layers]
        tls: list[torch.Tensor] = []
    total, count = 0.0, 0
    try:
        for ids in windows.sequential(max_batches):
            tl = token_losses(model(input_ids=ids).logits, ids)  # [B, S]
            ok = ~torch.isnan(tl)
            total += float(tl[ok].sum())
            count += int(ok.sum())
            if moe:
                tls.append(tl.reshape(-1))
                for i, cap in enumerate(state.captured):
                    loads[i].add(cap.indices, cap.keep)
                    probs[i].append(cap.probs)
                    idx[i].append(cap.indices)
    finally:
        if wrapper is not None:
            wrapper.remove()
        model.train()
    res = {"loss": total / max(count, 1), "tokens": count}
    res["ppl"] = math.exp(res["loss"])
    if moe:
        tl_all = torch.cat(tls)
        res["layers"] = [layer_health(torch.cat(probs[i]), torch.cat(idx[i]), loads[i], tl_all)
                         for i in range(len(loads))]
    return res


def train(cfg: TrainConfig) -> Path:
    """Train ``cfg.preset`` on the configured text; returns the output folder, which then holds a
    ``save_pretrained`` model + tokenizer, ``README.md`` (model card), ``train_summary.json`` and
    ``health.jsonl``. See docs/train.md."""
    from tqdm.auto import tqdm

    from adaptk.train.card import write_card

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    texts = load_texts(cfg)
    out = cfg.out
    check_out(cfg)  # raises OutputExistsError before any work
    preset = PRESETS[cfg.preset]
    resume = ckpt.load(out) if cfg.resume else None
    run_config = ckpt.run_config(cfg, texts)
    resumed: list[dict] = []
    if resume is not None:  # before any work: a changed value is refused (or recorded, when allowed)
        record = ckpt.resume_record(resume, run_config, cfg.allow_changed_config, ckpt.ckpt_path(out))
        resumed = [*resume.get("resumed", []), record]
        if record["changed"]:
            log.warning("resuming at step %s with changed values: %s", record["step"], record["changed"])
    tok = load_tokenizer(out) if resume is not None else train_bpe(texts.train.text, cfg.vocab_size)
    train_w = TokenWindows(encode(tok, texts.train.text), cfg.seq_len, cfg.batch_size, cfg.seed)
    valid_w = TokenWindows(encode(tok, texts.valid.text), cfg.seq_len, min(cfg.batch_size, 8), cfg.seed, "validation")
    before = _prepare_out(cfg)  # only now: bad input leaves no folder behind
    if resume is None:
        tok.save_pretrained(str(out))

    model = build_model(cfg.preset, len(tok), cfg.seed, cfg.model_overrides)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, preset.moe), lr=cfg.lr, betas=(0.9, 0.95))
    state = RoutingState(cfg.controls, total_steps=cfg.steps)
    detector = CollapseDetector()
    history: list[float] = []
    start_step, elapsed = 0, 0.0
    tokens_seen = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        start_step, elapsed, history = resume["step"], resume["elapsed"], resume["history"]
        tokens_seen = resume.get("tokens_seen", start_step * cfg.batch_size * cfg.seq_len)
        state.bias = resume["bias"]
        detector.load_state_dict(resume["detector"])
        ckpt.set_rng_state(resume["rng"])
    else:
        torch.manual_seed(cfg.seed)
    wrapper = RouterWrapper(model, state) if preset.moe else None
    loads = [LoadAccumulator(layer.num_experts) for layer in wrapper.layers] if wrapper else []
    logger = _Logger(out)
    warnings: list[dict] = []
    tokens_per_step = cfg.batch_size * cfg.seq_len
    stop = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not cfg.progress, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for step in range(start_step, stop):
            state.step = step
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            ids = train_w.batch(step)  # [B, S]
            logits = model(input_ids=ids).logits  # [B, S, V]
            tl = token_losses(logits, ids)
            lm_loss = tl[:, :-1].mean()
            aux = _aux_losses(state, wrapper, cfg)
            loss = lm_loss + aux["aux"] if aux else lm_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            history.append(float(lm_loss.detach()))
            tokens_seen += ids.numel()
            if wrapper is not None:
                for i, cap in enumerate(state.captured):
                    loads[i].add(cap.indices, cap.keep)
                if cfg.controls.aux_free_bias_speed > 0:
                    for i, (layer, cap) in enumerate(zip(wrapper.layers, state.captured)):
                        kept = cap.indices[cap.keep]
                        load = torch.bincount(kept.reshape(-1).cpu(), minlength=layer.num_experts)
                        state.bias[i] = aux_free_bias_update(state.bias[i], load, cfg.controls.aux_free_bias_speed)
            done = step + 1
            wall = elapsed + time.perf_counter() - t0
            tok_s = (done - start_step) * tokens_per_step / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{history[-1]:.3f}", tok_s=f"{tok_s:.0f}")
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                rec = {"step": done, "loss": history[-1], "lr": lr_at(step, cfg), "tokens_per_s": tok_s,
                       "elapsed_s": wall}
                if aux:
                    rec.update({k: float(v.detach()) for k, v in aux.items()})
                    rec["temperature"] = state.tau()
                    rec["k"] = state.k(wrapper.layers[0].native_k, wrapper.layers[0].num_experts)
                    rec["layers"] = [layer_health(cap.probs, cap.indices, loads[i], tl.reshape(-1))
                                     for i, cap in enumerate(state.captured)]
                    events = detector.check(done, rec["layers"])
                    rec["warnings"] = events
                    warnings.extend(events)
                    for acc in loads:
                        acc.reset()
                logger.write(rec)
            if done % cfg.ckpt_every == 0 or done == stop:
                ckpt.save(out, {
                    "preset": cfg.preset, "steps": cfg.steps, "step": done, "elapsed": wall,
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                    "bias": state.bias, "detector": detector.state_dict(), "rng": ckpt.rng_state(),
                    "config": run_config, "resumed": resumed, "tokens_seen": tokens_seen,
                })
    finally:
        bar.close()
        logger.close()
        if wrapper is not None:
            wrapper.remove()
    train_time = elapsed + time.perf_counter() - t0
    if stop < cfg.steps:
        log.info("stopped after step %d of %d (checkpoint saved; continue with --resume)", stop, cfg.steps)
        finish_folder(out, RUN_KIND, before)
        return out
    valid = evaluate(model, valid_w, cfg.eval_batches, preset.moe)
    heldout = heldout_results(model, tok, _heldout_corpora(cfg, texts),
                              HeldoutSpec(window=cfg.seq_len, tokens=cfg.heldout_tokens))
    model.save_pretrained(str(out))
    write_card(out, cfg, model, texts, history, valid, warnings, train_time, len(train_w) * cfg.seq_len,
               resumed=resumed, tokens_seen=tokens_seen, heldout=heldout)
    if not cfg.keep_checkpoints:
        _remove_checkpoint(out)
    finish_folder(out, RUN_KIND, before)
    return out


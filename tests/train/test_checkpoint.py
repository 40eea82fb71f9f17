"""Resume checks: a changed run value is refused (naming checkpoint and given value) unless
``allow_changed_config``, which continues and records the change in the summary and card."""

import json

import pytest
import torch

from adaptk.cli.main import main
from adaptk.train import RoutingControls, TrainConfig, train
from adaptk.train import checkpoint as ckpt
from adaptk.train.errors import ResumeError, TrainConfigError


def _given(**kw):
    base = {"preset": "mixtral-mini", "steps": 6, "vocab_size": 300, "model_overrides": {}, "batch_size": 4,
            "seq_len": 16, "lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.1, "seed": 0,
            "controls.jitter": 0.0, ckpt.TEXT_KEY: "abc"}
    base.update(kw)
    return base


def test_resume_record_names_each_changed_value():
    payload = {"step": 3, "config": _given()}
    given = _given(lr=1e-3, seed=7, **{"controls.jitter": 0.1, ckpt.TEXT_KEY: "def"})
    with pytest.raises(ResumeError) as err:
        ckpt.resume_record(payload, given, allow_changed=False, where="ck.pt")
    msg = str(err.value)
    for part in ("lr (--lr): checkpoint 0.003, given 0.001", "seed (--seed): checkpoint 0, given 7",
                 "controls.jitter (--jitter): checkpoint 0.0, given 0.1",
                 "train_text_sha256 (--corpus/--text-file): checkpoint 'abc', given 'def'",
                 "--allow-changed-config", "step 3"):
        assert part in msg
    rec = ckpt.resume_record(payload, given, allow_changed=True, where="ck.pt")
    assert rec == {"step": 3, "changed": ckpt.config_changes(payload["config"], given)}
    assert rec["changed"]["lr"] == {"checkpoint": 3e-3, "given": 1e-3} and len(rec["changed"]) == 4
    assert ckpt.resume_record(payload, _given(), allow_changed=False, where="ck.pt") == {"step": 3, "changed": {}}


@pytest.mark.parametrize("key,value", [("preset", "olmoe-mini"), ("steps", 9), ("vocab_size", 512),
                                       ("model_overrides", {"hidden_size": 64})])
def test_structural_values_never_change_even_when_allowed(key, value):
    with pytest.raises(ResumeError, match=f"cannot change on resume: {key}"):
        ckpt.resume_record({"step": 3, "config": _given()}, _given(**{key: value}), allow_changed=True, where="x")


def test_old_checkpoint_without_config_is_refused_clearly_or_recorded_as_unknown():
    old = {"preset": "mixtral-mini", "steps": 6, "step": 3}
    with pytest.raises(ResumeError, match="older adaptk.*--allow-changed-config"):
        ckpt.resume_record(old, _given(), allow_changed=False, where="x")
    assert ckpt.resume_record(old, _given(), allow_changed=True, where="x") == {"step": 3, "changed": "unknown"}
    with pytest.raises(ResumeError, match="steps"):
        ckpt.resume_record(old, _given(steps=9), allow_changed=True, where="x")


def test_allow_changed_config_needs_resume():
    with pytest.raises(TrainConfigError, match="only with --resume"):
        TrainConfig(allow_changed_config=True)


@pytest.mark.parametrize("change", [dict(batch_size=2), dict(seq_len=8), dict(lr=1e-3), dict(seed=1),
                                    dict(warmup_steps=3), dict(controls=RoutingControls(jitter=0.05)),
                                    dict(text="other text here\n" * 300)])
def test_changed_value_on_resume_is_refused_and_leaves_the_run_untouched(tmp_path, tiny_cfg, change):
    out = tmp_path / "m"
    train(tiny_cfg(out=out, stop_after=3))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ResumeError, match="changed since") as err:
        train(tiny_cfg(out=out, resume=True, **change))
    key = next(iter(change))
    assert (key if key not in ("controls", "text") else {"controls": "jitter", "text": "train_text"}[key]) in str(err.value)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_allowed_change_is_recorded_in_summary_and_card(tmp_path, tiny_cfg):
    out = tmp_path / "m"
    train(tiny_cfg(out=out, stop_after=3))
    train(tiny_cfg(out=out, resume=True, allow_changed_config=True, batch_size=2, lr=1e-3))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed"] == [{"step": 3, "changed": {"batch_size": {"checkpoint": 4, "given": 2},
                                                          "lr": {"checkpoint": 3e-3, "given": 1e-3}}}]
    assert summary["tokens_seen"] == 3 * 4 * 16 + 3 * 2 * 16  # each segment at its own batch size
    assert summary["config"]["batch_size"] == 2 and summary["steps"] == 6
    card = (out / "README.md").read_text()
    assert "resumed at step 3 with changed values: batch_size 4 -> 2, lr 0.003 -> 0.001" in card


def test_unchanged_resume_is_recorded_without_changes(tmp_path, tiny_cfg):
    out = tmp_path / "m"
    train(tiny_cfg(out=out, stop_after=2))
    train(tiny_cfg(out=out, stop_after=4, resume=True))
    saved = torch.load(ckpt.ckpt_path(out), weights_only=False)
    assert saved["resumed"] == [{"step": 2, "changed": {}}] and saved["config"]["batch_size"] == 4
    train(tiny_cfg(out=out, resume=True))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed"] == [{"step": 2, "changed": {}}, {"step": 4, "changed": {}}]
    assert "resumed at step" not in (out / "README.md").read_text()


def test_cli_refuses_changed_lr_and_allows_it_with_the_flag(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("".join(f"def f{i}(x): return x + {i}\n" for i in range(400)))
    out = tmp_path / "out"
    # the config `adaptk train` builds for these options (mixtral-mini's recipe: entropy -0.008, 1 thread)
    train(TrainConfig(out=out, text_files=(str(text),), steps=4, batch_size=2, seq_len=16, vocab_size=300,
                      warmup_steps=1, ckpt_every=2, eval_batches=1, threads=1, progress=False, stop_after=2,
                      controls=RoutingControls(entropy_coef=-0.008)))
    args = ["train", "--out", str(out), "--text-file", str(text), "--steps", "4", "--batch-size", "2",
            "--seq-len", "16", "--vocab-size", "300", "--warmup-steps", "1", "--ckpt-every", "2",
            "--eval-batches", "1", "--no-progress", "--resume", "--lr", "0.001"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("adaptk train: error: --resume: the run config changed")
    assert "lr (--lr): checkpoint 0.003, given 0.001" in err and err.count("\n") == 1
    assert main([*args, "--allow-changed-config"]) == 0
    resumed = json.loads((out / "train_summary.json").read_text())["resumed"]
    assert resumed == [{"step": 2, "changed": {"lr": {"checkpoint": 0.003, "given": 0.001}}}]

import json
import logging

import pytest
import torch

from adaptk.data import CorpusError
from adaptk.train import OutputExistsError, ResumeError, RoutingControls, TrainConfig, TrainConfigError, train
from adaptk.train.router_wrap import RouterWrapper, RoutingState


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "health.jsonl").read_text().splitlines()]


def test_train_saves_a_loadable_model_and_card(tiny_cfg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = train(tiny_cfg())
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert type(model).__name__ == "MixtralForCausalLM"
    ids = tok("def f(x): return x", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == model.config.vocab_size
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 6 and len(summary["data"]["train"]["sha256"]) == 64
    assert summary["valid_ppl"] > 1 and len(summary["valid_routing"]) == 1
    card = (out / "README.md").read_text()
    assert "sha256" in card and "perplexity" in card
    rec = json.loads((out / "health.jsonl").read_text().splitlines()[-1])
    layer = rec["layers"][0]
    for key in ("entropy_mean", "entropy_hist", "load_entropy", "expert_load", "load_cv", "load_max_over_mean",
                "dead_fraction", "drop_rate", "expert_loss"):
        assert key in layer
    assert not (out / "checkpoints").exists()
    assert "forward" not in model.model.layers[0].mlp.gate.__dict__


@pytest.mark.parametrize("preset", ["olmoe-mini", "qwen-moe-mini", "dense-mini"])
def test_other_presets_train(tiny_cfg, tiny_overrides, preset):
    over = dict(tiny_overrides)
    if preset == "olmoe-mini":
        over.update(num_experts=8, num_experts_per_tok=2)
    if preset == "qwen-moe-mini":
        over.update(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=16)
    out = train(tiny_cfg(preset=preset, steps=2, model_overrides=over))
    assert json.loads((out / "train_summary.json").read_text())["preset"] == preset


def test_resume_reproduces_uninterrupted_run(tmp_path, tiny_cfg):
    controls = RoutingControls(jitter=0.05, logit_noise=0.1, aux_free_bias_speed=0.01)
    full = train(tiny_cfg(out=tmp_path / "full", log_every=1, controls=controls))
    part = tmp_path / "part"
    train(tiny_cfg(out=part, log_every=1, controls=controls, stop_after=3))
    assert len(_losses(part)) == 3 and (part / "checkpoints" / "last.pt").is_file()
    train(tiny_cfg(out=part, log_every=1, controls=controls, resume=True))
    assert _losses(part) == _losses(full)


def test_routing_controls_run_and_report_drops(tiny_cfg):
    controls = RoutingControls(capacity_factor=1.0, temperature_start=2.0, dense_steps=2, sparsify_steps=2,
                               entropy_coef=0.01)
    out = train(tiny_cfg(controls=controls, log_every=1))
    recs = [json.loads(line) for line in (out / "health.jsonl").read_text().splitlines()]
    assert recs[0]["k"] == 8 and recs[-1]["k"] == 2
    assert recs[0]["temperature"] == 2.0
    assert any(r["layers"][0]["drop_rate"] > 0 for r in recs)


def test_gradients_flow_through_routing_weights(tiny_overrides):
    from adaptk.train.presets import build_model

    model = build_model("mixtral-mini", 300, 0, tiny_overrides)
    with RouterWrapper(model, RoutingState(RoutingControls(), total_steps=1)):
        ids = torch.randint(0, 300, (2, 8))
        model(input_ids=ids).logits.sum().backward()  # LM loss only: no aux term
    assert model.model.layers[0].mlp.gate.weight.grad.abs().sum() > 0


def test_bad_inputs(tmp_path, tiny_cfg, tiny_text):
    with pytest.raises(TrainConfigError, match="mixtral-mini"):
        TrainConfig(preset="gpt-9")
    with pytest.raises(TrainConfigError, match="empty"):
        train(tiny_cfg(text="   \n"))
    with pytest.raises(TrainConfigError, match="fewer than one batch"):
        train(tiny_cfg(text=tiny_text, batch_size=4096))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train(tiny_cfg())
    with pytest.raises(CorpusError):
        train(tiny_cfg(text=None, text_files=(str(tmp_path / "missing.txt"),), overwrite=True))
    with pytest.raises(CorpusError, match="WikiText"):
        train(tiny_cfg(text=None, corpus="wikitext-2", overwrite=True))
    with pytest.raises(ResumeError, match="no checkpoint"):
        train(tiny_cfg(out=tmp_path / "fresh", resume=True))
    with pytest.raises(TrainConfigError, match="jitter"):
        RoutingControls(jitter=1.5)


def test_collapse_warning_fires_without_controls_and_not_with(tiny_cfg, caplog, tmp_path):
    collapse = RoutingControls(balance_coef=0.0, z_loss_coef=0.0, entropy_coef=-5.0)
    with caplog.at_level(logging.WARNING, logger="adaptk.train.health"):
        out = train(tiny_cfg(out=tmp_path / "bad", controls=collapse, steps=30, lr=1e-2, log_every=3))
    warned = [w for line in (out / "health.jsonl").read_text().splitlines() for w in json.loads(line)["warnings"]]
    assert warned and "collapse" in caplog.text and "layer 0" in caplog.text
    caplog.clear()
    healthy = RoutingControls(balance_coef=0.1, z_loss_coef=0.001, entropy_coef=0.05, aux_free_bias_speed=0.05)
    with caplog.at_level(logging.WARNING, logger="adaptk.train.health"):
        out = train(tiny_cfg(out=tmp_path / "good", controls=healthy, steps=30, lr=1e-2, log_every=5,
                                 batch_size=8))
    warned = [w for line in (out / "health.jsonl").read_text().splitlines() for w in json.loads(line)["warnings"]]
    assert not warned and "collapse" not in caplog.text

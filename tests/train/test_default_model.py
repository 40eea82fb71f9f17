"""The shipped default model (committed in src/adaptk/assets/default-model) loads and is healthy."""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adaptk.assets import default_model_path
from adaptk.models import find_moe_layers


def test_default_model_loads_with_declared_architecture():
    path = default_model_path()
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert size <= 20 * 1024 * 1024
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    assert type(model).__name__ == "MixtralForCausalLM"
    assert model.config.num_local_experts == 8 and model.config.num_experts_per_tok == 2
    layers = find_moe_layers(model)
    assert len(layers) == model.config.num_hidden_layers
    assert 2_000_000 <= sum(p.numel() for p in model.parameters()) <= 4_500_000
    ids = tok("import os\n\ndef main():\n    return os.getcwd()\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    summary = json.loads((path / "train_summary.json").read_text())
    assert summary["preset"] == "mixtral-mini" and summary["data"]["train"]["name"] == "stdlib"
    for layer in summary["valid_routing"]:
        assert 0.15 <= layer["entropy_mean"] <= 0.9
        assert layer["dead_fraction"] == 0 and layer["load_max_over_mean"] < 2
    assert "sha256" in (path / "README.md").read_text()


def test_default_model_card_numbers_are_the_spread_sample():
    """The card's valid and test perplexity come from the representative sample (recomputed with
    ``docs/scripts/refresh_card.py``), and the card is the rendering of the summary."""
    from adaptk.train.card import render_card

    path = default_model_path()
    summary = json.loads((path / "train_summary.json").read_text())
    for split, docs in (("valid", 28), ("test", 34)):
        h = summary["heldout"][split]
        assert h["sample"] == {"kind": "spread", "tokens": 16384, "budget": 16384, "piece": 1024, "seed": 0}
        assert h["corpus"] == "stdlib" and h["documents"] == docs and (h["window"], h["stride"]) == (128, 64)
        assert summary[f"{split}_ppl"] == h["ppl"] and h["ppl_lo"] < h["ppl"] < h["ppl_hi"]
    assert summary["routing_eval"]["tokens"] == 40640
    assert (path / "README.md").read_text() == render_card(summary)

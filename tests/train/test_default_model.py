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

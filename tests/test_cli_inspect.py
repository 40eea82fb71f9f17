"""``adaptk inspect`` on the shipped default model."""

import json

from adaptk.cli.main import main


def test_inspect_lists_layers_and_routes_a_text(capsys):
    assert main(["inspect", "--model", "default"]) == 0
    out = capsys.readouterr().out
    assert "4 MoE layers" in out and "family=mixtral" in out
    text = "def f(x):\n    return [i * 2 for i in range(x)]\n"
    assert main(["inspect", "--model", "default", "--fixed", "1", "--text", text, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.split("policy: FixedTopK(k=1)\n", 1)[1])
    assert report["compute_fraction"] == 0.5 and report["average_k"] == 1.0
    assert all(layer["executed_pairs"] == layer["tokens"] for layer in report["layers"])


def test_inspect_rejects_a_policy_wider_than_the_model(capsys):
    assert main(["inspect", "--model", "default", "--fixed", "9", "--text", "x = 1"]) == 2
    assert "only 8" in capsys.readouterr().err

"""``adaptk monitor`` on a tiny model folder with a character tokenizer."""

import json
import string

import pytest
from tiny_models import tiny_model

from adaptk.cli.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-mixtral")
    chars = sorted(set(string.ascii_lowercase + string.digits + " .,:()=_\n"))[:63]
    tok = Tokenizer(models.WordLevel({c: i + 1 for i, c in enumerate(chars)} | {"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(path)
    tiny_model("mixtral").save_pretrained(path)
    return path


PROSE = "the cat sat on the mat and looked at the quiet garden, where the rain fell slowly. " * 12
CODE = "def f(x):\n    return x * 2 + g(y_1) == 3\nclass k(a, b): pass\n" * 14


def test_stats_baseline_and_drift(model_dir, tmp_path, capsys):
    prose, code = tmp_path / "prose.txt", tmp_path / "code.txt"
    prose.write_text(PROSE)
    code.write_text(CODE)
    base = tmp_path / "base.json"
    args = ["monitor", "--model", str(model_dir), "--window", "32", "--batch-size", "4"]
    assert main([*args, "--text-file", str(prose), "--save-baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert "H mean" in out and base.is_file()
    assert main([*args, "--text-file", str(code), "--baseline", str(base), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["drift"]["shifted_layers"] == [0, 1]
    assert len(data["stats"]["layers"]) == 2


def test_rejects_bad_baseline_and_model(model_dir, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(PROSE)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "adaptk-routing-baseline", "version": 7}')
    assert main(["monitor", "--model", str(model_dir), "--text-file", str(text), "--baseline", str(bad)]) == 2
    assert "newer than this adaptk" in capsys.readouterr().err
    assert main(["monitor", "--model", str(tmp_path), "--text-file", str(text)]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_policy_file(model_dir, tmp_path, capsys):
    text, pol = tmp_path / "t.txt", tmp_path / "p.json"
    text.write_text(PROSE)
    pol.write_text(json.dumps({"rule": "top_p", "p": 0.4}))
    assert main(["monitor", "--model", str(model_dir), "--text-file", str(text), "--policy", str(pol),
                 "--window", "64", "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["stats"]["layers"]
    assert all(s["average_k"] < 2 for s in layers)


def test_policy_file_is_checked_against_the_model(model_dir, tmp_path, capsys):
    from adaptk import FixedTopK
    from adaptk.calibrate import make_policy_file
    from adaptk.calibrate.policy_file import save_policy_file

    text = tmp_path / "t.txt"
    text.write_text(PROSE)
    fits, other = tmp_path / "fits.json", tmp_path / "other.json"
    save_policy_file(make_policy_file(tiny_model("mixtral"), FixedTopK(1), {"strategy": "theory"}), fits)
    save_policy_file(make_policy_file(tiny_model("olmoe"), FixedTopK(1), {"strategy": "theory"}), other)
    args = ["monitor", "--model", str(model_dir), "--text-file", str(text), "--window", "32", "--json"]
    assert main([*args, "--policy", str(fits)]) == 0
    layers = json.loads(capsys.readouterr().out)["stats"]["layers"]
    assert all(layer["average_k"] == 1.0 for layer in layers)
    assert main([*args, "--policy", str(other)]) == 2
    assert "num_experts" in capsys.readouterr().err


def test_fail_on_drift_gates_on_the_default_model(tmp_path, capsys):
    from adaptk.cli.monitor import EXIT_DRIFT

    base = tmp_path / "stdlib.json"
    args = ["monitor", "--model", "default", "--max-tokens", "512"]
    assert main([*args, "--corpus", "stdlib", "--save-baseline", str(base)]) == 0
    capsys.readouterr()
    # other text: drifted, so the gate fails with 3 (and without the flag the command still exits 0)
    assert main([*args, "--corpus", "gutenberg", "--baseline", str(base), "--fail-on-drift"]) == EXIT_DRIFT == 3
    assert "routing drifted against" in capsys.readouterr().err
    assert main([*args, "--corpus", "gutenberg", "--baseline", str(base)]) == 0
    capsys.readouterr()
    # the same text: no drift, the gate passes
    assert main([*args, "--corpus", "stdlib", "--baseline", str(base), "--fail-on-drift"]) == 0
    assert "drifted" not in capsys.readouterr().err


def test_fail_on_drift_needs_a_baseline_and_enough_tokens(model_dir, tmp_path, capsys):
    text, base = tmp_path / "t.txt", tmp_path / "base.json"
    text.write_text(PROSE)
    args = ["monitor", "--model", str(model_dir), "--text-file", str(text), "--window", "32"]
    assert main([*args, "--fail-on-drift"]) == 2
    assert "--fail-on-drift needs --baseline" in capsys.readouterr().err
    assert main([*args, "--save-baseline", str(base)]) == 0
    capsys.readouterr()
    # too few tokens to judge: the gate does not pass silently
    assert main([*args, "--max-tokens", "64", "--baseline", str(base), "--fail-on-drift"]) == 2
    assert "could not be judged" in capsys.readouterr().err


def test_monitor_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["monitor", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--fail-on-drift" in out and "3 --fail-on-drift and at least one layer shifted" in out

"""Where ``adaptk calibrate`` writes its policy file: checked before the model is loaded, never over a
file that is not a policy file (without --overwrite), and a file in the way is a clear error."""

from __future__ import annotations

import pytest
from tiny_models import tiny_model

import adaptk.loading.model as io
from adaptk.calibrate import make_policy_file, save_policy_file
from adaptk.cli.main import main
from adaptk.outputs import OutputExistsError
from adaptk.routing import RatioSkip


@pytest.fixture
def no_model(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(io, "load_model_and_tokenizer", boom)


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("adaptk calibrate: error:") and len(err.splitlines()) == 1, err
    return err


def test_calibrate_out_is_checked_first_and_clearly(tmp_path, capsys, no_model):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["calibrate", "--out", str(afile / "p.json"), "--no-progress"]) == 2
    err = _err(capsys)
    assert "is a file, not a folder" in err and "File exists" not in err
    assert main(["calibrate", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "is a folder, not a file" in _err(capsys)
    assert main(["calibrate", "--out", str(afile), "--no-progress"]) == 2
    assert "--overwrite" in _err(capsys)
    assert afile.read_text() == "x"


def test_save_policy_file_replaces_only_policy_files(tmp_path):
    model = tiny_model("mixtral")
    pf = make_policy_file(model, RatioSkip(0.3, 2), {"strategy": "theory", "tokens": 0, "targets": {}})
    mine = tmp_path / "p.json"
    mine.write_text('{"version": 1, "my": "settings"}')
    with pytest.raises(OutputExistsError, match="not an adaptk policy file"):
        save_policy_file(pf, mine)
    assert mine.read_text() == '{"version": 1, "my": "settings"}'
    save_policy_file(pf, mine, overwrite=True)
    save_policy_file(pf, mine)  # now a policy file: replaced without the flag
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]

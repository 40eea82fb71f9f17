"""``adaptk monitor --save-baseline``: the path is checked before any model is run, and a file that is
not an adaptk baseline is never replaced without --overwrite."""

from __future__ import annotations

import json
import os

import pytest

import adaptk.monitor.runner as runner
from adaptk.cli.main import main
from adaptk.monitor.drift import Baseline, LayerProfile
from adaptk.outputs import OutputExistsError


@pytest.fixture
def no_run(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model ran before --save-baseline was checked")

    monkeypatch.setattr(runner, "monitor_text", boom)


@pytest.fixture
def text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("some text to route " * 20)
    return p


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("adaptk monitor: error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_save_baseline_into_an_invalid_path_fails_fast(tmp_path, text, capsys, no_run):
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = ["monitor", "--model", "default", "--text-file", str(text)]
    assert main([*args, "--save-baseline", str(afile / "b.json")]) == 2
    assert "is a file, not a folder" in _err(capsys)
    assert main([*args, "--save-baseline", str(tmp_path)]) == 2
    assert "is a folder, not a file" in _err(capsys)
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    assert main([*args, "--save-baseline", str(notes)]) == 2
    assert "--overwrite" in _err(capsys)
    assert notes.read_text() == '{"mine": true}' and afile.read_text() == "x"
    if os.path.isdir("/proc/self"):  # permission bits say yes there (to root too): only a write probe can tell
        assert main([*args, "--save-baseline", "/proc/adaptk-nope/b.json"]) == 2
        assert "does not accept new files" in _err(capsys)


def test_baseline_save_replaces_only_baselines(tmp_path):
    base = Baseline(fingerprint={"architecture": "X", "num_moe_layers": 1, "num_experts": [2], "native_k": [1]},
                    bins=4, source="t", layers=[LayerProfile(0, 3, [1, 1, 1, 0], [2, 1])])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(OutputExistsError, match="not an adaptk baseline file"):
        base.save(other)
    assert json.loads(other.read_text()) == {"format": "something else"}
    p = base.save(tmp_path / "b.json")
    base.save(p)  # an adaptk baseline: replaced
    base.save(other, overwrite=True)
    assert Baseline.load(other).source == "t"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["b.json", "other.json"]

import argparse

from adaptk.cli import train as cli_train
from adaptk.cli.main import main


def test_cli_parses_all_options():
    p = argparse.ArgumentParser()
    cli_train.add_arguments(p)
    a = p.parse_args(["--out", "x", "--preset", "olmoe-mini", "--corpus", "gutenberg", "--steps", "5",
                      "--batch-size", "2", "--seq-len", "8", "--lr", "1e-3", "--seed", "3", "--overwrite",
                      "--log-every", "1", "--ckpt-every", "2", "--balance-coef", "0.1", "--z-loss-coef", "0",
                      "--entropy-coef", "-0.1", "--aux-free-bias-speed", "0.01", "--jitter", "0.1",
                      "--logit-noise", "0.5", "--temperature-start", "2", "--temperature-end", "1",
                      "--dense-steps", "3", "--sparsify-steps", "3", "--capacity-factor", "1.25"])
    assert a.preset == "olmoe-mini" and a.capacity_factor == 1.25 and a.entropy_coef == -0.1


def test_cli_module_is_light():
    assert "torch" not in vars(cli_train)


def test_cli_reports_bad_input(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 100)
    out = tmp_path / "out"
    out.mkdir()
    (out / "f").write_text("x")
    assert main(["train", "--out", str(out), "--text-file", str(text)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "o2"), "--preset", "nope"]) == 2
    assert "mixtral-mini" in capsys.readouterr().err

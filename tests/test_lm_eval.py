"""adaptk as an lm-evaluation-harness model (``--model adaptk``), fully offline.

The checks that need lm-eval skip where it is not installed (``pip install 'adaptk[lm-eval]'``);
the argument checks and the lazy import run everywhere. The task is written here: a YAML
multiple-choice task over a local JSONL file of ten Python snippets (the shipped default model
was trained on Python source), run on the shipped default model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaptk.lm_eval.args import PatchArgs, model_folder, patch_args
from adaptk.lm_eval.errors import LmEvalArgsError, LmEvalMissingError

SRC = Path(__file__).resolve().parent.parent / "src"
TASK = "adaptk_tiny_mc"
DOCS = [
    ("import os\nimport", [" sys", " 12345"], 0),
    ("def __init__(self", [" 7", "):"], 1),
    ("for i in", [" range(", " elif"], 0),
    ("        return", [" self.", " def"], 0),
    ("class Foo", ["(object):", " +="], 0),
    ("if x is", [" None:", " import"], 0),
    ("    def", [" __init__(", " ="], 0),
    ("try:\n    pass\nexcept", [" return", " Exception"], 1),
    ("from collections import", [" OrderedDict", " (("], 0),
    ("raise", [" ValueError(", " 3.0"], 0),
]
KW = dict(kernels=("exact", "native"), routings=("torch", "fused"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


# -- the model arguments, checked before anything loads (no lm-eval needed) ------------------------------


def test_importing_adaptk_does_not_import_lm_eval():
    code = "import sys, adaptk, adaptk.lm_eval; assert 'lm_eval' not in sys.modules, 'lm_eval imported'"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


@pytest.mark.parametrize("kwargs, message", [
    (dict(policy="p.json", fixed_k=2), "not both"),
    (dict(fixed_k=0), r"fixed_k must be an integer >= 1 .*, got 0"),
    (dict(fixed_k=True), "fixed_k must be an integer"),
    (dict(fixed_k="2"), "fixed_k must be an integer"),
    (dict(kernel="native"), "give policy= or fixed_k= too"),
    (dict(routing="torch"), "give policy= or fixed_k= too"),
    (dict(fixed_k=2, kernel="fast"), "kernel=fast: unknown; choose one of exact, native"),
    (dict(fixed_k=2, routing="c"), "routing=c: unknown; choose one of torch, fused"),
    (dict(policy=3), "policy must be the path"),
])
def test_bad_model_args_are_named(kwargs, message):
    with pytest.raises(LmEvalArgsError, match=message):
        patch_args(**kwargs, **KW)


def test_missing_policy_file_is_named(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(LmEvalArgsError, match=f"policy={missing}: no such file"):
        patch_args(policy=str(missing), **KW)


def test_policy_file_and_defaults(tmp_path):
    f = tmp_path / "p.json"
    f.write_text("{}")
    assert patch_args(policy=str(f), **KW) == PatchArgs(policy_file=f, kernel="exact", routing="fused")
    assert not patch_args(**KW).patched


@given(st.integers(min_value=-5, max_value=64))
def test_fixed_k_accepted_exactly_when_positive(k):
    if k >= 1:
        assert patch_args(fixed_k=k, **KW) == PatchArgs(fixed_k=k)
    else:
        with pytest.raises(LmEvalArgsError):
            patch_args(fixed_k=k, **KW)


def test_model_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert model_folder(str(tmp_path), lambda: Path("/nowhere")) == tmp_path
    assert model_folder("default", lambda: tmp_path) == tmp_path
    with pytest.raises(LmEvalArgsError, match=r"pretrained=/no/such: /no/such is not a model folder"):
        model_folder("/no/such", lambda: tmp_path)
    with pytest.raises(LmEvalArgsError, match="must be a model folder or 'default'"):
        model_folder(None, lambda: tmp_path)


def test_register_without_lm_eval_says_how_to_install(monkeypatch):
    from adaptk.lm_eval import register

    for name in [n for n in sys.modules if n == "lm_eval" or n.startswith("lm_eval.")] + ["lm_eval"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(LmEvalMissingError, match=r"adaptk\[lm-eval\]"):
        register()


# -- through lm-eval -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """A multiple-choice task over a local JSONL file, both written here."""
    d = tmp_path_factory.mktemp("lm_eval_task")
    with open(d / "docs.jsonl", "w", encoding="utf-8") as f:
        for context, choices, label in DOCS:
            f.write(json.dumps({"context": context, "choices": choices, "label": label}) + "\n")
    (d / f"{TASK}.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d / 'docs.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return d


@pytest.fixture(scope="module")
def lm_eval(monkeypatch_module):
    """lm-eval with ``adaptk`` registered, offline (skips where lm-eval is not installed)."""
    for key, value in OFFLINE.items():
        monkeypatch_module.setenv(key, value)
    lm_eval = pytest.importorskip("lm_eval")
    import adaptk.lm_eval

    adaptk.lm_eval.register()
    return lm_eval


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def default_model():
    from transformers import AutoModelForCausalLM

    from adaptk.assets import default_model_path

    return AutoModelForCausalLM.from_pretrained(str(default_model_path())).eval()


def _policy_file(path: Path, model, policy) -> Path:
    from adaptk.calibrate import make_policy_file, save_policy_file

    return save_policy_file(make_policy_file(model, policy, {"strategy": "theory"}), path)


@pytest.fixture(scope="module")
def entropy_policy(tmp_path_factory, default_model):
    from adaptk import EntropyThreshold

    policy = EntropyThreshold.from_fractions(k_values=[1, 2], alphas=[0.9], num_experts=8)
    return _policy_file(tmp_path_factory.mktemp("policy") / "entropy.json", default_model, policy)


_MANAGERS: dict[Path, object] = {}


def _evaluate(lm_eval, task_dir, **model_args):
    from lm_eval.tasks import TaskManager

    if task_dir not in _MANAGERS:  # indexing lm-eval's own tasks takes seconds: once
        _MANAGERS[task_dir] = TaskManager(include_path=str(task_dir))
    return lm_eval.simple_evaluate(
        model="adaptk", model_args={"pretrained": "default", **model_args}, tasks=[TASK], device="cpu",
        batch_size=1, log_samples=True, task_manager=_MANAGERS[task_dir],
    )


def _loglikelihoods(results) -> list:
    """Per doc, per choice, the loglikelihood lm-eval computed."""
    samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
    return [[resp[0][0] for resp in s["resps"]] for s in samples]


@pytest.fixture(scope="module")
def unpatched(lm_eval, task_dir):
    return _evaluate(lm_eval, task_dir)


@pytest.mark.slow
def test_unpatched_run_has_accuracy_and_says_unpatched(unpatched):
    acc = unpatched["results"][TASK]["acc,none"]
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    assert unpatched["config"]["adaptk"] == {"patched": False}
    assert len(_loglikelihoods(unpatched)) == len(DOCS)


@pytest.mark.slow
def test_native_fixed_k_gives_the_unpatched_loglikelihoods_exactly(lm_eval, task_dir, unpatched):
    native = _evaluate(lm_eval, task_dir, fixed_k=2)
    assert _loglikelihoods(native) == _loglikelihoods(unpatched)
    assert native["results"][TASK]["acc,none"] == unpatched["results"][TASK]["acc,none"]
    info = native["config"]["adaptk"]
    assert info["patched"] and info["policy"] == {"rule": "fixed_top_k", "k": 2}
    assert info["tokens"] > 0 and info["average_k"] == 2.0 and info["compute_fraction"] == 1.0


@pytest.mark.slow
def test_entropy_policy_reports_compute_below_native(lm_eval, task_dir, unpatched, entropy_policy):
    res = _evaluate(lm_eval, task_dir, policy=str(entropy_policy))
    acc = res["results"][TASK]["acc,none"]
    assert 0.0 <= acc <= 1.0
    info = res["config"]["adaptk"]
    assert info["patched"] and info["policy_file"] == str(entropy_policy)
    assert info["policy"]["rule"] == "entropy_threshold"
    assert info["executed_pairs"] > 0 and 0.0 < info["compute_fraction"] < 1.0
    assert 1.0 <= info["average_k"] < 2.0
    assert info["executed_pairs"] == sum(sum(k * n for k, n in enumerate(layer["k_histogram"]))
                                         for layer in info["layers"])
    assert _loglikelihoods(res) != _loglikelihoods(unpatched)  # the dropped experts changed the model's output


@pytest.mark.slow
def test_policy_file_of_another_model_is_refused(lm_eval, task_dir, tmp_path):
    from tiny_models import tiny_model

    from adaptk import FixedTopK
    from adaptk.calibrate import PolicyFileError

    other = _policy_file(tmp_path / "other.json", tiny_model("mixtral"), FixedTopK(1))
    with pytest.raises(PolicyFileError, match="made for another model"):
        _evaluate(lm_eval, task_dir, policy=str(other))


@pytest.mark.slow
def test_cli_bad_model_arg_is_one_line(lm_eval, task_dir, tmp_path, capsys):
    from adaptk.lm_eval.__main__ import main

    missing = tmp_path / "no-model"
    rc = main(["--model", "adaptk", "--model_args", f"pretrained={missing}", "--tasks", TASK,
               "--include_path", str(task_dir), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith(f"adaptk lm-eval: error: pretrained={missing}: ") and "Traceback" not in "\n".join(err)


@pytest.mark.slow
def test_cli_subprocess_offline(lm_eval, task_dir, entropy_policy, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "adaptk.lm_eval", "--model", "adaptk",
         "--model_args", f"pretrained=default,policy={entropy_policy}", "--tasks", TASK,
         "--include_path", str(task_dir), "--device", "cpu", "--limit", "6", "--output_path", str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "adaptk: average k" in proc.stderr and "compute fraction" in proc.stderr
    (results_file,) = out.rglob("results_*.json")
    res = json.loads(results_file.read_text())
    assert 0.0 <= res["results"][TASK]["acc,none"] <= 1.0
    assert res["results"][TASK]["sample_len"] == 6
    info = res["config"]["adaptk"]
    assert info["executed_pairs"] > 0 and 0.0 < info["compute_fraction"] < 1.0

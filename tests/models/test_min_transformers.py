"""Families that need a newer transformers than the lowest adaptk supports are declared
(``MoEFamily.min_transformers``), agree with the installed transformers' router code, and are
refused with a clear error below that version, never routed with a mirrored router of the wrong
convention."""

import ast
import dataclasses
from pathlib import Path

import pytest
import transformers
from hypothesis import given
from hypothesis import strategies as st
from tiny_models import tiny_model

from adaptk.errors import UnsupportedModelError
from adaptk.models import find_moe_layers, registry
from adaptk.models.families import FAMILIES, MIXTRAL
from adaptk.models.registry import family_unavailable, release

MODELS_DIR = Path(transformers.__file__).parent / "models"


def _first_returned(name: str) -> str | None:
    """The first element of what router class ``name``'s forward returns in the installed
    transformers (source text), or None where the class is not there."""
    for path in sorted(MODELS_DIR.glob("*/modeling_*.py")):
        text = path.read_text(encoding="utf-8")
        if f"class {name}(" not in text:
            continue
        for node in ast.parse(text).body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                forward = next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "forward")
                returned = [n.value for n in ast.walk(forward) if isinstance(n, ast.Return)]
                assert returned and isinstance(returned[-1], ast.Tuple), f"{name}.forward returns no tuple"
                return ast.unparse(returned[-1].elts[0])
    return None


@given(a=st.integers(0, 99), b=st.integers(0, 999), c=st.integers(0, 99),
       suffix=st.sampled_from(["", ".dev0", "rc1", "+cpu", ".post1"]))
def test_release_reads_the_release_numbers(a, b, c, suffix):
    assert release(f"{a}.{b}.{c}{suffix}") == (a, b, c)
    assert release(f"{a}.{b}{suffix}") == (a, b, 0)


def test_release_rejects_what_is_no_version():
    with pytest.raises(ValueError, match="not a version"):
        release("five")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_declared_minimum_agrees_with_the_installed_router_code(family):
    """Where the family is available, every declared router class present returns the logits
    first (the convention adaptk's patched routers return); where it is not, the declaration is
    needed: a declared class is missing or returns something else first."""
    firsts = {name: _first_returned(name) for name in family.router_classes}
    present = {n: f for n, f in firsts.items() if f is not None}
    if family_unavailable(family) is None:
        assert present, f"no router class of {family.name} in transformers {transformers.__version__}"
        assert all("logits" in f for f in present.values()), present
    else:
        assert family.router_classes[0] not in present or any("logits" not in f for f in present.values())


def test_family_unavailable_names_the_versions_and_the_fix():
    granite = next(f for f in FAMILIES if f.name == "granitemoe")
    assert granite.min_transformers is not None
    why = family_unavailable(granite, "5.16.1")
    assert why is not None and "granitemoe" in why and "5.16.1" in why and granite.min_transformers in why
    assert f"transformers>={granite.min_transformers},<6" in why
    assert family_unavailable(granite, granite.min_transformers) is None
    assert family_unavailable(MIXTRAL, "5.0.0") is None


def test_find_refuses_a_family_newer_than_the_installed_transformers(monkeypatch):
    model = tiny_model("mixtral")
    monkeypatch.setitem(registry._BY_ROUTER_CLASS, "MixtralTopKRouter",
                        dataclasses.replace(MIXTRAL, min_transformers="99.0"))
    with pytest.raises(UnsupportedModelError, match=r"mixtral models from transformers 99\.0 on"):
        find_moe_layers(model)
    monkeypatch.undo()
    assert find_moe_layers(model)


@pytest.mark.parametrize("name", ["granitemoe", "jamba"])
def test_model_of_a_declared_family_on_the_installed_transformers(name):
    """Under the installed transformers, a tiny model of a family with a declared minimum is
    either found and routed (new enough) or refused with the upgrade to make, never half-routed."""
    from tiny_models import COMMON, TINY

    cfg_name, extra = TINY[name]
    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, cfg_name)(**COMMON, **extra))
    family = next(f for f in FAMILIES if f.name == name)
    if family_unavailable(family) is None:
        assert {layer.family.name for layer in find_moe_layers(model)} == {name}
    else:
        with pytest.raises(UnsupportedModelError, match=r"transformers|no MoE layer"):
            find_moe_layers(model)

"""The family declarations hold for the installed transformers: every router class declared
beside a family's reference class has the same ``forward`` code (the family functions read the
attributes ``__init__`` sets from the instance, so only the forward arithmetic must match)."""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest
import transformers

from adaptk.models.families import FAMILIES
from adaptk.models.registry import family_unavailable

MODELS_DIR = Path(transformers.__file__).parent / "models"


def _router_class(name):
    """Find a router class by name in transformers' modeling files (text search, then import)."""
    for path in sorted(MODELS_DIR.glob("*/modeling_*.py")):
        if f"class {name}(" in path.read_text(encoding="utf-8"):
            module = importlib.import_module(f"transformers.models.{path.parent.name}.{path.stem}")
            return getattr(module, name)
    pytest.skip(f"{name} is not in this transformers version")


def _code(cls):
    tree = ast.parse(inspect.getsource(cls))
    parts = [ast.dump(n) for n in tree.body[0].body if isinstance(n, ast.FunctionDef) and n.name == "forward"]
    return re.sub(r"id='\w*Config'", "", "".join(parts))


@pytest.mark.parametrize(
    "family, name",
    [(f, c) for f in FAMILIES for c in f.router_classes[1:]],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_declared_router_has_the_reference_code(family, name):
    if family_unavailable(family):  # an older transformers: the family is refused (test_min_transformers)
        pytest.skip(family_unavailable(family))
    assert _code(_router_class(name)) == _code(_router_class(family.router_classes[0]))

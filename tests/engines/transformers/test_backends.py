"""The router back-ends are a registry by public name; a chain ends at the torch ops."""

import pytest
from tiny_models import tiny_model

import adaptk
from adaptk.engines.transformers import BACKENDS, ROUTING_MODES, backend
from adaptk.engines.transformers.backends import chain
from adaptk.errors import PatchConfigError


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_is_reachable_by_its_public_name(name):
    assert backend(name).name == name
    assert chain(name)[0].name == name and chain(name)[-1].name == "torch"
    with adaptk.patch(tiny_model("mixtral"), adaptk.FixedTopK(2), routing=name) as handle:
        assert handle.active


def test_public_names_are_the_routing_modes():
    assert set(ROUTING_MODES) == set(BACKENDS) == {"native", "fused", "torch"}


def test_an_unknown_name_lists_the_backends():
    with pytest.raises(PatchConfigError, match="routing must be one of") as err:
        adaptk.patch(tiny_model("mixtral"), adaptk.FixedTopK(2), routing="fast")
    assert all(name in str(err.value) for name in BACKENDS)
    assert isinstance(err.value, ValueError)


def test_an_unknown_check_finite_is_a_config_error():
    with pytest.raises(PatchConfigError, match="check_finite must be one of.*eager"):
        adaptk.patch(tiny_model("mixtral"), adaptk.FixedTopK(2), check_finite="sometimes")

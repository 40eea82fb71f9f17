"""The experts flags that older transformers releases predate: declared once, read with the
value that reproduces those releases' arithmetic, on the installed transformers as on older ones."""

import inspect

import pytest
import torch
import transformers
import transformers.integrations.moe as tf_moe
from packaging.version import Version
from tiny_models import tiny_model

from adaptk.experts import variable_k_experts_forward
from adaptk.experts.compat import PREDATED, experts_flag, has_post_expert_norm, post_expert_norm
from adaptk.models import find_moe_layers

INSTALLED = Version(Version(transformers.__version__).base_version)


def _experts():
    return find_moe_layers(tiny_model("mixtral"))[0].experts


def _routing(t=12, n=8, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(t)])
    return index, torch.rand(t, k, generator=g)


@pytest.mark.parametrize("name", sorted(PREDATED))
def test_declared_release_matches_the_installed_transformers(name):
    """Modules carry the flag from the declared release on, and releases before it have no code
    that reads it (so the declared default is what they compute)."""
    since = Version(PREDATED[name].since)
    experts = _experts()
    if INSTALLED >= since:
        assert hasattr(experts, name)
        assert name in inspect.getsource(tf_moe)
    else:
        assert not hasattr(experts, name)
        assert name not in inspect.getsource(tf_moe)


def test_missing_flag_reads_as_the_declared_default():
    experts = _experts()
    experts.__dict__.pop("has_post_expert_norm", None)  # as built by transformers < 5.20
    assert has_post_expert_norm(experts) is PREDATED["has_post_expert_norm"].default
    y = torch.randn(3, 4)
    assert post_expert_norm(experts, y) is y


def test_present_flag_is_read_as_set():
    experts = _experts()
    experts.has_post_expert_norm = True
    experts.post_expert_norm = torch.nn.Identity()
    assert has_post_expert_norm(experts) is True
    experts.has_post_expert_norm = False
    assert has_post_expert_norm(experts) is False


def test_flags_not_declared_are_required():
    experts = _experts()
    with pytest.raises(AttributeError):
        experts_flag(experts, "has_no_such_flag")


@pytest.mark.parametrize("sync_free", [False, True])
@pytest.mark.parametrize("order", ["expert", "slot"])
def test_forward_without_the_flag_is_the_forward_with_it_off(order, sync_free):
    """An experts module built by transformers < 5.20 (no ``has_post_expert_norm``) runs, with
    the same bits as one whose flag is off."""
    experts = _experts()
    index, weights = _routing()
    hidden = torch.randn(12, experts.gate_up_proj.shape[-1], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        experts.has_post_expert_norm = False
        off = variable_k_experts_forward(experts, hidden, index, weights, order=order, sync_free=sync_free)
        del experts.has_post_expert_norm
        missing = variable_k_experts_forward(experts, hidden, index, weights, order=order, sync_free=sync_free)
    assert torch.equal(missing, off)


@pytest.mark.parametrize("order", ["expert", "slot"])
def test_post_expert_norm_applied_where_declared(order):
    """With the flag on, every expert's output goes through the module's norm before weighting."""
    experts = _experts()
    index, weights = _routing()
    hidden = torch.randn(12, experts.gate_up_proj.shape[-1], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        experts.has_post_expert_norm = False
        plain = variable_k_experts_forward(experts, hidden, index, weights, order=order)
        experts.has_post_expert_norm = True
        experts.post_expert_norm = lambda y: 2 * y  # linear: the weighted sum doubles
        normed = variable_k_experts_forward(experts, hidden, index, weights, order=order)
    torch.testing.assert_close(normed, 2 * plain)

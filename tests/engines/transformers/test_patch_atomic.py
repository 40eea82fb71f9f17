"""patch() is all or nothing: a patch that raises leaves the model computing exactly as before."""

import importlib

import pytest
import torch
from tiny_models import tiny_model

import adaptk
from adaptk.errors import KernelError, PatchError, PolicyError
from adaptk.models import find_moe_layers

handle_module = importlib.import_module("adaptk.engines.transformers.handle")
install_module = importlib.import_module("adaptk.engines.transformers.install")

# families with two MoE layers in their tiny model -> the config key of their expert count
FAMILIES = {"mixtral": "num_local_experts", "qwen2_moe": "num_experts", "olmoe": "num_experts",
            "gpt_oss": "num_local_experts"}
_SLOTS = ("forward", "_old_forward")


def _ids():
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(5))


def _logits(model):
    with torch.no_grad():
        return model(_ids()).logits


def _forwards(model):
    """Every module's own forward entries (what patch replaces), by module name."""
    return {name: {s: m.__dict__.get(s) for s in _SLOTS} for name, m in model.named_modules()}


def _native_k(model):
    return find_moe_layers(model)[0].native_k


def _assert_untouched(model, ref, forwards):
    """The failed patch left nothing: same logits bit for bit, same forwards, no mark; and a
    patch after it works and undoes."""
    assert torch.equal(_logits(model), ref)
    assert _forwards(model) == forwards
    assert not hasattr(model, "_adaptk_patch")
    handle = adaptk.patch(model, adaptk.FixedTopK(_native_k(model)))
    assert torch.equal(_logits(model), ref)  # the native k: bit for bit
    assert handle.stats().tokens == _ids().numel()
    handle.unpatch()
    assert torch.equal(_logits(model), ref)
    assert _forwards(model) == forwards


def _setup(family):
    model = tiny_model(family)
    return model, _logits(model), _forwards(model)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_unknown_kernel_leaves_the_model_as_it_was(family):
    model, ref, forwards = _setup(family)
    with pytest.raises(KernelError, match="unknown kernel 'bogus'"):
        adaptk.patch(model, adaptk.FixedTopK(_native_k(model)), kernel="bogus")
    _assert_untouched(model, ref, forwards)


@pytest.mark.parametrize("kernel", ["native", "onednn", "onednn-packed"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_kernel_one_layer_cannot_run_leaves_the_model_as_it_was(family, kernel):
    model = tiny_model(family)
    find_moe_layers(model)[1].experts.to(torch.float16)  # layer 0 can run the kernel, layer 1 cannot
    ref, forwards = _logits(model), _forwards(model)
    with pytest.raises(KernelError, match="float16"):
        adaptk.patch(model, adaptk.FixedTopK(_native_k(model)), kernel=kernel)
    _assert_untouched(model, ref, forwards)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_policy_invalid_for_one_layer_leaves_the_model_as_it_was(family):
    model = tiny_model(family)
    k = _native_k(model)
    # layer 1 swapped for a block of the same family with only k experts
    small = tiny_model(family, seed=1, **{FAMILIES[family]: k})
    name = find_moe_layers(model)[1].name
    parent, attr = name.rsplit(".", 1)
    setattr(model.get_submodule(parent), attr, small.get_submodule(name))
    ref, forwards = _logits(model), _forwards(model)
    with pytest.raises(PolicyError, match=f"only {k}"):
        adaptk.patch(model, adaptk.FixedTopK(k + 1))  # fits layer 0, not layer 1
    _assert_untouched(model, ref, forwards)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_builder_failing_on_the_second_layer_leaves_the_model_as_it_was(family, monkeypatch):
    model, ref, forwards = _setup(family)
    real, calls = handle_module.bind_experts, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected: building the second layer's experts forward failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(handle_module, "bind_experts", failing)
    with pytest.raises(RuntimeError, match="injected"):
        adaptk.patch(model, adaptk.FixedTopK(_native_k(model)))
    assert len(calls) == 2
    monkeypatch.undo()
    _assert_untouched(model, ref, forwards)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_failure_while_installing_undoes_every_layer(family, when, monkeypatch):
    """The third install (layer 1's router) raises, before or after it replaced the forward."""
    model, ref, forwards = _setup(family)
    real, calls = install_module._Installed.install, []

    def failing(self):
        calls.append(1)
        if len(calls) == 3:
            if when == "after":
                real(self)
            raise RuntimeError("injected: installation failed")
        real(self)

    monkeypatch.setattr(install_module._Installed, "install", failing)
    with pytest.raises(RuntimeError, match="injected"):
        adaptk.patch(model, adaptk.FixedTopK(_native_k(model)))
    assert len(calls) == 3
    monkeypatch.undo()
    _assert_untouched(model, ref, forwards)


def test_failure_marking_the_model_undoes_every_layer(monkeypatch):
    model, ref, forwards = _setup("mixtral")

    class Refusing(type(model)):
        def __setattr__(self, name, value):
            if name == "_adaptk_patch":
                raise RuntimeError("injected: cannot mark the model")
            super().__setattr__(name, value)

    model.__class__ = Refusing
    with pytest.raises(RuntimeError, match="injected"):
        adaptk.patch(model, adaptk.FixedTopK(2))
    assert torch.equal(_logits(model), ref)
    assert _forwards(model) == forwards


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_patching_a_patched_model_changes_nothing(family):
    model, ref, forwards = _setup(family)
    handle = adaptk.patch(model, adaptk.FixedTopK(1))
    patched, patched_forwards = _logits(model), _forwards(model)
    with pytest.raises(PatchError, match="already patched"):
        adaptk.patch(model, adaptk.FixedTopK(_native_k(model)), kernel="bogus")
    assert torch.equal(_logits(model), patched)
    assert _forwards(model) == patched_forwards
    assert handle.active
    handle.unpatch()
    _assert_untouched(model, ref, forwards)

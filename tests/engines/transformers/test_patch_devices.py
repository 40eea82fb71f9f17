"""Models with accelerate device hooks (device_map) keep working, and unpatch restores the hooks."""

import pytest
import torch
from tiny_models import tiny_model

import adaptk
from adaptk.models import find_moe_layers

accelerate = pytest.importorskip("accelerate")


def test_patch_under_accelerate_hooks():
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module, remove_hook_from_module

    model = tiny_model("mixtral")
    layers = find_moe_layers(model)
    for layer in layers:  # what dispatch_model(device_map=...) installs on each module
        add_hook_to_module(layer.router, AlignDevicesHook(execution_device="cpu", io_same_device=True))
        add_hook_to_module(layer.experts, AlignDevicesHook(execution_device="cpu", io_same_device=True))
    hooked_forward = layers[0].router.forward
    ids = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
        with adaptk.patch(model, adaptk.FixedTopK(2)) as handle:
            assert layers[0].router.forward is hooked_forward  # the hook still wraps the call
            torch.testing.assert_close(model(ids).logits, ref, rtol=0, atol=0)
            assert handle.stats().tokens == 6
        torch.testing.assert_close(model(ids).logits, ref, rtol=0, atol=0)
    for layer in layers:
        remove_hook_from_module(layer.router)
        remove_hook_from_module(layer.experts)
        # accelerate puts the class's own forward back: nothing of adaptk is left under the hook
        assert layer.router.forward.__func__ is type(layer.router).forward
        assert layer.experts.forward.__func__ is type(layer.experts).forward


@pytest.mark.gpu
def test_layers_on_their_own_devices_without_host_sync():
    model = tiny_model("mixtral").cuda()
    ids = torch.randint(0, 64, (2, 8), device="cuda")
    with torch.no_grad():
        ref = model(ids).logits
        with adaptk.patch(model, adaptk.FixedTopK(2)) as handle:
            torch.cuda.set_sync_debug_mode("error")
            try:
                out = model(ids).logits
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        assert handle.stats().layers[0].tokens == 16

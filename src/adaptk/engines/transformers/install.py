"""Replace forwards on module instances all or nothing, and put back exactly what was there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_MISSING = object()
MARK = "_adaptk_patch"  # the model attribute naming the handle whose patch is in place


def _forward_slot(module: nn.Module) -> str:
    """accelerate's device hooks wrap ``forward`` and call ``_old_forward``: patch under them."""
    return "_old_forward" if hasattr(module, "_hf_hook") and "_old_forward" in module.__dict__ else "forward"


class _Installed:
    """One replaced forward, and how to undo it."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]) -> None:
        self.module, self.slot, self.fn = module, _forward_slot(module), fn
        self.saved = module.__dict__.get(self.slot, _MISSING)

    def install(self) -> None:
        setattr(self.module, self.slot, self.fn)

    def undo(self) -> None:
        if self.saved is _MISSING:  # (also where install never ran)
            self.module.__dict__.pop(self.slot, None)
        else:
            setattr(self.module, self.slot, self.saved)


def install_all(model: nn.Module, owner: object, replacements: list[tuple[nn.Module, Callable[..., Any]]],
                installed: list[_Installed]) -> None:
    """Install every replacement forward (recorded in ``installed``) and mark ``model`` with
    ``owner``; on any failure undo them all first, so a failed install leaves the model as it was."""
    try:
        for module, fn in replacements:
            inst = _Installed(module, fn)
            installed.append(inst)  # recorded first: undone even if install fails half way
            inst.install()
        setattr(model, MARK, owner)
    except BaseException:
        undo_all(model, owner, installed)
        raise


def undo_all(model: nn.Module, owner: object, installed: list[_Installed]) -> None:
    """Put back every replaced forward, last first, and remove the model's mark if it is ``owner``'s."""
    for inst in reversed(installed):
        inst.undo()
    installed.clear()
    if model.__dict__.get(MARK) is owner:
        delattr(model, MARK)

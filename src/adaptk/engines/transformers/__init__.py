"""The transformers engine adapter: ``patch()`` installs adaptk's routing on a loaded model.

``install`` replaces forwards all or nothing, ``handle`` is the ``PatchHandle`` it returns,
``backends`` the router back-ends by their public names (``routing=``), ``forward`` the
router forward they plug into, ``patch`` the validating entry point.
"""

from adaptk.engines.transformers.backends import BACKENDS, ROUTING_MODES, backend
from adaptk.engines.transformers.handle import PatchHandle

__all__ = ["BACKENDS", "ROUTING_MODES", "PatchHandle", "backend"]

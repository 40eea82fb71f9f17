"""adaptk's routers bound through torch's C++ API (``routing/csrc/router_ext.cpp``).

At one token, right after a layer call (a decode step), what surrounds the routing arithmetic
costs more than the arithmetic: each torch op dispatched from Python, each tensor check and
allocation, ctypes' argument handling, all the slower with the caches cold. This module
compiles a small torch extension (``adaptk.native.extension``), linked with ``route_topk.c``
and ``route_native.c``, with two classes:

- ``Fused``, the default router (``fused.fused_router``): the model's linear layer and float32
  softmax and torch's entropy through the same at:: ops the Python code calls (the same bits),
  then ``adaptk_route_topk`` and the statistics' counts (``adaptk_count``), in one Python call;
- ``Router``, the native router (``fused.NativeRouter.route``): the checks, the three output
  tensors and ``adaptk_route_native`` in one call, the ctypes binding's results.

It builds once per source, compiler, torch and Python version and CPU into adaptk's cache
folder (a one-time compile). Where it cannot, ``unavailable()`` says why: the fused router then
runs the model's scores in Python and the C step through ctypes, and the native router uses
ctypes (the same results, slower per call).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import ModuleType

from adaptk.native import extension as native_extension
from adaptk.native.build import NativeBuildError

log = logging.getLogger(__name__)

MODULE = "adaptk_router"  # PYBIND11_MODULE's name in router_ext.cpp
PACKAGE = "adaptk.routing"  # whose csrc/ holds the sources
C_SOURCES = ("route_topk.c", "route_native.c")
CXX_SOURCE = "router_ext.cpp"
INSTEAD = "adaptk calls its routers' C code with ctypes (the same results, slower per call)"


def build() -> Path:
    """Compile the extension for this CPU, torch and Python unless the cache has it; its path."""
    return native_extension.build_extension(MODULE, PACKAGE, C_SOURCES, CXX_SOURCE, INSTEAD)


@functools.cache
def extension() -> ModuleType:
    """The compiled extension, built on first call and loaded once (``NativeBuildError`` or
    ``ImportError`` if it cannot be)."""
    return native_extension.load(MODULE, build())


@functools.cache
def unavailable() -> str | None:
    """Why the C++ binding cannot run here (no C++ compiler, no Python headers, ...), or None if
    it can (asked once per process; logged once)."""
    try:
        extension()
    except (NativeBuildError, ImportError, OSError) as err:
        log.info("adaptk: %s: %s", INSTEAD, err)
        return str(err)
    return None

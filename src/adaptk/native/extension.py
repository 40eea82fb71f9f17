"""adaptk's routers bound through torch's C++ API (``experts/csrc/router_ext.cpp``).

At one token, right after a layer call (a decode step), what surrounds the routing arithmetic
costs more than the arithmetic: each torch op dispatched from Python, each tensor check and
allocation, ctypes' argument handling, all the slower with the caches cold. This module
compiles a small torch extension, linked with ``route_topk.c``, with two classes:

- ``Fused``, the default router (``fused.fused_router``): the model's linear layer and float32
  softmax and torch's entropy through the same at:: ops the Python code calls (the same bits),
  then ``adaptk_route_topk`` and the statistics' counts (``adaptk_count``), in one Python call;
- ``Router``, the native router (``fused.NativeRouter.route``): the checks, the three output
  tensors and ``adaptk_route_native`` in one call, the ctypes binding's results.

It needs a C++ compiler, torch's headers (in its wheel) and Python's (``Python.h``), and builds
once per source, compiler, torch and Python version and CPU into the native kernel's cache
folder (``native.cache_dir()``; a one-time compile). Where it cannot, ``unavailable()`` says why: the
fused router then runs the model's scores in Python and the C step through ctypes, and the
native router uses ctypes (the same results, slower per call).
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import logging
import sysconfig
from pathlib import Path
from types import ModuleType

import torch

from adaptk.experts import native

log = logging.getLogger(__name__)

MODULE = "adaptk_router"  # PYBIND11_MODULE's name in router_ext.cpp
C_FLAGS = ("-O3", "-march=native", "-std=gnu11", "-fPIC", "-c")
CXX_FLAGS = ("-O2", "-std=c++20", "-fPIC", "-shared")  # torch 2.x's headers need C++20 features
INSTEAD = "adaptk calls its routers' C code with ctypes (the same results, slower per call)"


def _torch_flags() -> tuple[list[str], list[str]]:
    """What a torch extension compiles (headers, ABI) and links (torch's libraries) with."""
    from torch.utils.cpp_extension import include_paths, library_paths  # imported only to build

    cflags = [*(f"-I{p}" for p in include_paths()), f"-I{sysconfig.get_paths()['include']}",
              f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    libs = [flag for d in library_paths() for flag in (f"-L{d}", f"-Wl,-rpath,{d}")]
    return cflags, [*libs, "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]


def build() -> Path:
    """Compile the extension for this CPU, torch and Python unless the cache has it; its path."""
    cc, cxx = native.compiler(INSTEAD), native.compiler(INSTEAD, "CXX", "c++")
    c_code, cxx_code = native.source("route_topk.c"), native.source("router_ext.cpp")
    cflags, libs = _torch_flags()
    found = native.headers(c_code, cxx_code)  # counters.h: the statistics' counter layout

    def steps(tmp: Path, out: Path) -> list[list[str]]:
        c, cpp, obj = tmp / "route_topk.c", tmp / "router_ext.cpp", tmp / "route_topk.o"
        c.write_bytes(c_code)
        cpp.write_bytes(cxx_code)
        for header, text in found.items():
            (tmp / header).write_bytes(text)
        return [[cc, *C_FLAGS, str(c), "-o", str(obj)],
                [cxx, *CXX_FLAGS, *cflags, str(cpp), str(obj), "-o", str(out), *libs]]

    key = [c_code, cxx_code, cc, cxx, " ".join(C_FLAGS + CXX_FLAGS), " ".join(cflags + libs),
           torch.__version__, sysconfig.get_config_var("EXT_SUFFIX") or "", native.cpu_fingerprint(),
           *native.header_key(found)]
    return native.compile_cached(MODULE, key, steps, INSTEAD, suffix=importlib.machinery.EXTENSION_SUFFIXES[0])


@functools.cache
def extension() -> ModuleType:
    """The compiled extension, built on first call and loaded once (``NativeBuildError`` or
    ``ImportError`` if it cannot be)."""
    path = build()
    spec = importlib.util.spec_from_file_location(MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python extension")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def unavailable() -> str | None:
    """Why the C++ binding cannot run here (no C++ compiler, no Python headers, ...), or None if
    it can (asked once per process; logged once)."""
    try:
        extension()
    except (native.NativeBuildError, ImportError, OSError) as err:
        log.info("adaptk: %s: %s", INSTEAD, err)
        return str(err)
    return None

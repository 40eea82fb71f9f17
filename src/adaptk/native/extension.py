"""Building and loading a torch C++ extension from a package's ``csrc/`` files, cached like
``build``'s libraries.

A caller names its module (the ``PYBIND11_MODULE`` name of its C++ file), its C sources (each
compiled to an object with ``C_FLAGS``) and one C++ file that binds them through torch's API
(compiled and linked against torch with ``CXX_FLAGS``). It needs a C and a C++ compiler, torch's
headers (in its wheel) and Python's (``Python.h``), and builds once per source, compiler, torch
and Python version and CPU; ``NativeBuildError`` or ``ImportError`` says why it cannot.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sysconfig
from pathlib import Path
from types import ModuleType

import torch

from adaptk.native import build

C_FLAGS = ("-O3", "-march=native", "-std=gnu11", "-fPIC", "-c")
CXX_FLAGS = ("-O2", "-std=c++20", "-fPIC", "-shared")  # torch 2.x's headers need C++20 features


def torch_flags() -> tuple[list[str], list[str]]:
    """What a torch extension compiles (headers, ABI) and links (torch's libraries) with."""
    from torch.utils.cpp_extension import include_paths, library_paths  # imported only to build

    cflags = [*(f"-I{p}" for p in include_paths()), f"-I{sysconfig.get_paths()['include']}",
              f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    libs = [flag for d in library_paths() for flag in (f"-L{d}", f"-Wl,-rpath,{d}")]
    return cflags, [*libs, "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]


def build_extension(module: str, package: str, c_sources: tuple[str, ...], cxx_source: str, instead: str) -> Path:
    """Compile ``PACKAGE/csrc/C_SOURCES`` and ``CXX_SOURCE`` into the extension ``module`` for
    this CPU, torch and Python unless the cache has it; its path (``instead``: what the caller
    does where it cannot be built)."""
    cc, cxx = build.compiler(instead), build.compiler(instead, "CXX", "c++")
    c_codes = {name: build.source(package, name) for name in c_sources}
    cxx_code = build.source(package, cxx_source)
    cflags, libs = torch_flags()
    found = build.headers(package, *c_codes.values(), cxx_code)

    def steps(tmp: Path, out: Path) -> list[list[str]]:
        paths = build.write_sources(tmp, {**c_codes, cxx_source: cxx_code, **found})
        objects = [str(paths[name].with_suffix(".o")) for name in c_sources]
        return [*([cc, *C_FLAGS, str(paths[name]), "-o", obj] for name, obj in zip(c_sources, objects)),
                [cxx, *CXX_FLAGS, *cflags, str(paths[cxx_source]), *objects, "-o", str(out), *libs]]

    key = [*c_codes.values(), cxx_code, cc, cxx, " ".join(C_FLAGS + CXX_FLAGS), " ".join(cflags + libs),
           torch.__version__, sysconfig.get_config_var("EXT_SUFFIX") or "", build.cpu_fingerprint(),
           *build.header_key(found)]
    return build.compile_cached(module, key, steps, instead, suffix=importlib.machinery.EXTENSION_SUFFIXES[0])


def load(module: str, path: Path) -> ModuleType:
    """The extension ``module`` compiled at ``path``, loaded (``ImportError`` if it cannot be)."""
    spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python extension")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded

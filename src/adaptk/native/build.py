"""Compiling a package's C sources once per source, compiler, flags and CPU, into a cache folder.

A package ships its C code in ``csrc/`` and asks ``build_library`` (a shared library to load
with ``ctypes``) or ``compile_cached`` (any compiler command lines) for the binary. The cache
folder is ``$ADAPTK_CACHE_DIR``, else ``$XDG_CACHE_HOME/adaptk``, else ``~/.cache/adaptk``; the
key is everything the binary depends on (the sources and every header they include, directly or
through another header, the compiler, the flags and the CPU, for ``-march=native``), so a changed
source is compiled again and a shared cache never hands one CPU another's binary. Only a C
compiler is needed (``$CC``, else ``cc``); ``NativeBuildError`` says what is missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from adaptk.errors import KernelError

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-std=gnu11", "-fopenmp", "-shared", "-fPIC")
LIBS = ("-lm",)  # after the sources, where the linker looks for what it needs


class NativeBuildError(KernelError):
    """The native code could not be compiled or loaded here."""


def source(package: str, name: str) -> bytes:
    """``PACKAGE/csrc/NAME`` (with its extension), as the package ships it."""
    return (resources.files(package) / "csrc" / name).read_bytes()


_INCLUDE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]+"([\w.-]+)"', re.MULTILINE)


def headers(package: str, *codes: bytes) -> dict[str, bytes]:
    """The package's headers that the sources ``codes`` include (``#include "NAME"``, from its
    ``csrc/``), and those these include in turn, by name (sorted): written beside the sources when
    they compile, and part of the cache key."""
    found: dict[str, bytes] = {}
    todo = [m.decode() for code in codes for m in _INCLUDE.findall(code)]
    while todo:
        name = todo.pop()
        if name not in found:
            found[name] = source(package, name)
            todo.extend(m.decode() for m in _INCLUDE.findall(found[name]))
    return dict(sorted(found.items()))


def header_key(found: dict[str, bytes]) -> list[bytes | str]:
    """The cache key's share of ``headers``' answer: each name and its bytes."""
    return [part for name, code in found.items() for part in (name, code)]


def cpu_fingerprint() -> str:
    """What -march=native compiles for: the CPU model and flags (so a shared cache folder never
    hands one CPU another's binary)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(dict.fromkeys(lines))
    except OSError:
        return platform.processor() or platform.machine()


def cache_dir() -> Path:
    root = os.environ.get("ADAPTK_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adaptk"


def compiler(instead: str, variable: str = "CC", default: str = "cc") -> str:
    """The C compiler's path (``$CC``, else ``cc``; with "CXX", "c++": the C++ compiler's), or
    ``NativeBuildError`` saying how to get one, or ``instead``: what to do without."""
    cc = os.environ.get(variable, default)
    path = shutil.which(cc)
    if path is None:
        lang = "C++" if variable == "CXX" else "C"
        raise NativeBuildError(f"adaptk's native code needs a {lang} compiler, and {cc!r} is not on PATH: install "
                               f"gcc or clang (or set {variable}), or {instead}")
    return path


def compile_cached(name: str, key: list[bytes | str], steps: Callable[[Path, Path], list[list[str]]],
                   instead: str, suffix: str = ".so") -> Path:
    """Run the compiler command lines ``steps(tmp, out)`` (which write the library ``out`` in
    the empty folder ``tmp``) unless the cache has ``name``'s library for ``key`` (everything
    the binary depends on: sources, compilers, flags, CPU); return the library's path.
    ``NativeBuildError`` with the compiler's output (and ``instead``: what to do) if one fails."""
    digest = hashlib.sha256(b"\0".join(k if isinstance(k, bytes) else k.encode() for k in key)).hexdigest()[:16]
    lib = cache_dir() / f"{name}-{digest}{suffix}"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    log.info("adaptk: compiling %s (once for this version, compiler and CPU)", name)
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        out = Path(tmp) / lib.name
        for argv in steps(Path(tmp), out):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                shown = " ".join(a for a in argv if not a.startswith(tmp))  # not the temporary paths
                raise NativeBuildError(f"compiling {name} failed ({shown}):\n{done.stderr.strip()}\n"
                                       f"fix the compiler set-up, or {instead}")
        os.replace(out, lib)  # atomic: a concurrent build of the same key writes the same bytes
    log.info("adaptk: compiled %s into %s", name, lib)
    return lib


def write_sources(folder: Path, files: dict[str, bytes]) -> dict[str, Path]:
    """Write ``files`` (name -> bytes: sources and the headers they include) into ``folder``;
    their paths, by name."""
    paths = {name: folder / name for name in files}
    for name, code in files.items():
        paths[name].write_bytes(code)
    return paths


def build_library(name: str, package: str, sources: tuple[str, ...], instead: str,
                  flags: tuple[str, ...] = FLAGS) -> Path:
    """Compile ``PACKAGE/csrc/SOURCES`` (C files) with ``flags`` into one shared library
    ``name`` for this CPU unless the cache has it; return its path (``instead``: what the caller
    does where it cannot be built, said in ``NativeBuildError``)."""
    cc = compiler(instead)
    codes = {src: source(package, src) for src in sources}
    found = headers(package, *codes.values())

    def steps(tmp: Path, out: Path) -> list[list[str]]:
        paths = write_sources(tmp, {**codes, **found})
        return [[cc, *flags, *(str(paths[src]) for src in sources), "-o", str(out), *LIBS]]

    key = [*codes.values(), cc, " ".join(flags + LIBS), cpu_fingerprint(), *header_key(found)]
    return compile_cached(name, key, steps, instead)

"""Building and caching adaptk's C and C++ code: ``build`` compiles a package's ``csrc/`` files
into a shared library once per source, compiler, flags and CPU; ``extension`` builds a torch C++
extension the same way. Imports only the standard library, torch and ``adaptk.errors``."""

from adaptk.native.build import NativeBuildError

__all__ = ["NativeBuildError"]

"""The one exception family adaptk raises. Each message says what to do."""

from __future__ import annotations


class AdaptkError(Exception):
    """Base class of every error adaptk raises on purpose."""


class PolicyError(AdaptkError, ValueError):
    """A routing policy was built with, or applied to, arguments that cannot work."""


class RoutingInputError(AdaptkError, ValueError):
    """Router scores that cannot be routed (NaN/Inf, wrong shape or rank)."""


class UnsupportedModelError(AdaptkError, TypeError):
    """The model holds no MoE layer of a family adaptk knows."""


class PatchError(AdaptkError, RuntimeError):
    """A patch was applied twice, or removed when it was not in place."""


class KernelError(AdaptkError, RuntimeError):
    """A matmul kernel was asked for where it cannot run (device, dtype, autograd, build)."""


class PatchConfigError(AdaptkError, ValueError):
    """``patch()`` was given an option value it does not know (``routing=``, ``check_finite=``)."""

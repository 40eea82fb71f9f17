"""The layout of a layer's routing counters, read from the C header that declares it.

``csrc/counters.h`` says where each counter of ``adaptk.routing.stats.LayerStats`` lies in the two
tensors the C routers add to in place (``counts`` int64 and ``moments`` float64); the C sources
include it, and this module evaluates its ``#define`` lines at import, so that Python reads each
counter where the compiled code writes it. ``layout(kmax, n)`` gives the offsets for one layer.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from adaptk.errors import AdaptkError

HEADER = "counters.h"
_DEFINE = re.compile(r"^#define[ \t]+(ADAPTK_\w+)(?:\(([^)]*)\))?[ \t]+(\S.*?)[ \t]*$", re.MULTILINE)
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


class CounterLayoutError(AdaptkError, RuntimeError):
    """``counters.h`` holds a definition this module cannot read, or a layout the counters cannot have."""


def _macro(name: str, params: list[str], text: str) -> Callable[..., int]:
    """The function of ``params`` that the C expression ``text`` computes (+ - * and parentheses
    over integers and the parameters only), or ``CounterLayoutError``."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as err:
        raise CounterLayoutError(f"{HEADER}: {name} = {text!r} is not an integer expression: {err.msg}") from err

    def value(node: ast.AST, env: dict[str, int]) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and node.id in env:
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left, env), value(node.right, env))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand, env)
        raise CounterLayoutError(f"{HEADER}: {name} = {text!r}: only integers, its arguments {params}, "
                                 f"+ - * and parentheses are read")

    value(tree, dict.fromkeys(params, 0))  # every name and operator checked now, not at first use

    def call(*args: int) -> int:
        if len(args) != len(params):
            raise TypeError(f"{name} takes {len(params)} arguments ({', '.join(params)}), got {len(args)}")
        return value(tree, dict(zip(params, args)))

    return call


def parse(text: str) -> dict[str, Callable[..., int]]:
    """The ``ADAPTK_*`` definitions of a header's text, each as a function of its arguments
    (none for an object-like one)."""
    out: dict[str, Callable[..., int]] = {}
    for name, params, body in _DEFINE.findall(text):
        names = [p.strip() for p in params.split(",")] if params.strip() else []
        out[name] = _macro(name, names, body)
    return out


@functools.cache
def definitions() -> dict[str, Callable[..., int]]:
    """``csrc/counters.h``'s definitions, as the package ships the header."""
    return parse((resources.files("adaptk.routing") / "csrc" / HEADER).read_text())


@dataclass(frozen=True)
class CounterLayout:
    """Where one layer's counters lie (kmax: the most experts a token keeps; n: its experts).

    ``counts`` int64 [size]: ``counts[khist + k]`` the tokens that kept k experts (k = 0..kmax),
    ``counts[experts + e]`` the routing slots of expert e (e = 0..n-1), ``counts[dropped]`` the
    dropped slots, which is ``experts + n``: a dropped slot's sentinel id n lands there.
    ``moments`` float64 [moments_size]: ``moments[moment_sum]`` Σ H, ``moments[moment_sumsq]`` Σ H²."""

    kmax: int
    n: int
    khist: int
    experts: int
    dropped: int
    size: int
    moment_sum: int
    moment_sumsq: int
    moments_size: int


def layout(kmax: int, n: int, defs: dict[str, Callable[..., int]] | None = None) -> CounterLayout:
    """The layout of a layer's counters from ``counters.h`` (or ``defs``, ``parse``'s answer),
    checked to be one the fold can count into with one scatter: each segment contiguous, none
    overlapping, all within the tensors; else ``CounterLayoutError``."""
    d = definitions() if defs is None else defs
    need = ("ADAPTK_KHIST_AT", "ADAPTK_EXPERT_AT", "ADAPTK_DROPPED_AT", "ADAPTK_COUNTS_SIZE", "ADAPTK_MOMENT_SUM",
            "ADAPTK_MOMENT_SUMSQ", "ADAPTK_MOMENTS_SIZE")
    missing = [name for name in need if name not in d]
    if missing:
        raise CounterLayoutError(f"{HEADER} does not define {', '.join(missing)}: reinstall adaptk")
    khist, expert = d["ADAPTK_KHIST_AT"], d["ADAPTK_EXPERT_AT"]
    out = CounterLayout(kmax, n, khist(kmax, n, 0), expert(kmax, n, 0), d["ADAPTK_DROPPED_AT"](kmax, n),
                        d["ADAPTK_COUNTS_SIZE"](kmax, n), d["ADAPTK_MOMENT_SUM"](), d["ADAPTK_MOMENT_SUMSQ"](),
                        d["ADAPTK_MOMENTS_SIZE"]())
    k_slots = [khist(kmax, n, k) for k in range(kmax + 1)]
    e_slots = [expert(kmax, n, e) for e in range(n)] + [out.dropped]
    problems = []
    if k_slots != list(range(out.khist, out.khist + kmax + 1)):
        problems.append("the k histogram is not contiguous")
    if e_slots != list(range(out.experts, out.experts + n + 1)):
        problems.append("the expert counts and the dropped slot are not contiguous, in that order")
    if set(k_slots) & set(e_slots):
        problems.append("the k histogram overlaps the expert counts")
    if min(k_slots + e_slots) < 0 or max(k_slots + e_slots) >= out.size:
        problems.append(f"a counter lies outside counts [{out.size}]")
    if sorted((out.moment_sum, out.moment_sumsq)) != [0, 1] or out.moments_size != 2:
        problems.append("the moments are not Σ H and Σ H² in a tensor of 2")
    if problems:
        raise CounterLayoutError(f"{HEADER} (kmax {kmax}, {n} experts): {'; '.join(problems)}")
    return out

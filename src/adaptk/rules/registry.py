"""The rule registry and the names derived from it (in registration order)."""

from __future__ import annotations

from collections.abc import Callable

from adaptk.routing import Policy
from adaptk.rules.base import FitInputs, Rule, RuleError, SweepEntry

_RULES: dict[str, Rule] = {}


def register_rule(rule: Rule) -> Rule:
    """Add ``rule``; its name, sweep names and inspect flag must all be new."""
    if not isinstance(rule, Rule):
        raise RuleError(f"register_rule takes a Rule, got {type(rule).__name__}")
    if rule.name in _RULES:
        raise RuleError(f"a rule named {rule.name!r} is registered already ({_RULES[rule.name].policy.__name__}); "
                        "give the new rule another name")
    taken = set(sweep_entries())
    for entry in rule.sweep:
        if entry.name in taken:
            raise RuleError(f"rule {rule.name!r}: sweep rule {entry.name!r} is registered already; rename it")
        taken.add(entry.name)
    options = {r.flag.option for r in _RULES.values() if r.flag is not None}
    if rule.flag is not None and rule.flag.option in options:
        raise RuleError(f"rule {rule.name!r}: inspect flag {rule.flag.option} is taken; choose another")
    _RULES[rule.name] = rule
    return rule


def all_rules() -> tuple[Rule, ...]:
    return tuple(_RULES.values())


def get_rule(name: str) -> Rule:
    if name not in _RULES:
        raise RuleError(f"unknown rule {name!r}; known rules: {', '.join(_RULES)}")
    return _RULES[name]


def strategy_names() -> tuple[str, ...]:
    """``adaptk calibrate --strategy`` choices (``adaptk.calibrate.STRATEGIES``)."""
    return tuple(r.name for r in _RULES.values() if r.is_strategy)


def get_strategy(name: str) -> Rule:
    names = strategy_names()
    if name not in names:
        raise RuleError(f"unknown strategy {name!r}; choose one of {', '.join(names)}")
    return _RULES[name]


def sweep_entries() -> dict[str, SweepEntry]:
    return {e.name: e for r in _RULES.values() for e in r.sweep}


def sweep_names() -> tuple[str, ...]:
    """Rules the side-by-side sweep knows (``adaptk.evaluate.sweep.RULES``)."""
    return tuple(sweep_entries())


def default_sweep_names() -> tuple[str, ...]:
    """The sweep's rules when none are asked for (``adaptk.evaluate.sweep.DEFAULT_RULES``)."""
    return tuple(name for name, e in sweep_entries().items() if e.default)


def check_sweep_names(names) -> None:
    bad = [n for n in names if n not in sweep_entries()]
    if bad:
        raise RuleError(f"unknown rules {bad}; known: {list(sweep_names())}")


def sweep_fitters(inputs: FitInputs) -> dict[str, Callable[[float], Policy]]:
    """Every sweep rule as target average k -> policy on ``inputs``."""
    return {name: (lambda t, e=e: e.fit(inputs, t)) for name, e in sweep_entries().items()}


def flagged_rules() -> tuple[Rule, ...]:
    """Rules with an ``adaptk inspect`` flag."""
    return tuple(r for r in _RULES.values() if r.flag is not None)

"""Every strategy, sweep rule and CLI choice is read off the rule registry; unknown and duplicate
names are refused with a message naming what is known."""

import argparse

import pytest
from calibrate.helpers import random_ids

import adaptk.calibrate
import adaptk.calibrate.api
import adaptk.evaluate.sweep as sweep
from adaptk.calibrate import CalibrateConfig, CalibrationError
from adaptk.cli.main import build_parser
from adaptk.evaluate.sweep import SweepConfig, rule_fitters
from adaptk.routing import TopP
from adaptk.rules import (
    Flag,
    Rule,
    RuleError,
    SweepEntry,
    all_rules,
    default_sweep_names,
    flagged_rules,
    get_rule,
    register_rule,
    registry,
    strategy_names,
    sweep_names,
)


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _option(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in parser._actions if a.dest == dest)


def test_public_names_are_the_registry_s():
    assert adaptk.calibrate.STRATEGIES == adaptk.calibrate.api.STRATEGIES == strategy_names()
    assert sweep.RULES == sweep_names() and sweep.DEFAULT_RULES == default_sweep_names()
    assert set(default_sweep_names()) < set(sweep_names())
    # the names these had before the registry, in the same order
    assert strategy_names()[:6] == ("theory", "percentile", "quality", "top_p", "ratio_skip", "ratio_skip_median")
    assert sweep_names()[:6] == ("entropy_global", "entropy_per_layer", "entropy_quality_alloc", "top_p",
                                 "ratio_skip", "ratio_skip_per_layer")
    assert [r.flag.option for r in flagged_rules()][:4] == ["--fixed", "--alphas", "--top-p", "--ratio-skip"]
    assert "fixed" not in strategy_names()  # a rule without a fit is not a strategy


def test_cli_choices_are_the_registry_s():
    for cmd in ("calibrate", "evaluate"):
        assert tuple(_option(_subparser(cmd), "strategy").choices) == strategy_names()
    rules = _option(_subparser("evaluate"), "rules")
    assert rules.default == ",".join(default_sweep_names()) and ",".join(sweep_names()) in rules.help
    inspect = _subparser("inspect")
    for rule in flagged_rules():
        assert _option(inspect, rule.flag.dest).option_strings == [rule.flag.option]


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry, put back after the test."""
    monkeypatch.setattr(registry, "_RULES", dict(registry._RULES))


def test_a_registered_rule_appears_everywhere(scratch_registry):
    rule = register_rule(Rule(
        name="scratch_rule", policy=TopP, fit=lambda f, t: TopP(0.5, 1, 2), needs_target=True,
        sweep=(SweepEntry("scratch_sweep", lambda f, t: TopP(0.7, 1, 2), default=False),),
        flag=Flag("--scratch", "P", "TopP(P)", lambda p, args, n: TopP(p))))
    assert get_rule("scratch_rule") is rule and all_rules()[-1] is rule
    assert strategy_names()[-1] == "scratch_rule" and adaptk.calibrate.STRATEGIES[-1] == "scratch_rule"
    assert "scratch_rule" in _option(_subparser("calibrate"), "strategy").choices
    assert CalibrateConfig(strategy="scratch_rule", target_avg_k=1.5).strategy == "scratch_rule"
    with pytest.raises(CalibrationError, match="'scratch_rule' needs a target"):
        CalibrateConfig(strategy="scratch_rule")
    assert sweep_names()[-1] == "scratch_sweep" and "scratch_sweep" not in default_sweep_names()
    assert SweepConfig(rules=("scratch_sweep",)).rules == ("scratch_sweep",)
    fitters = rule_fitters(None, (1, 2), None)
    assert tuple(fitters) == sweep_names() and fitters["scratch_sweep"](1.5) == TopP(0.7, 1, 2)
    args = _subparser("inspect").parse_args(["--scratch", "0.3"])
    from adaptk.cli.inspect import _policy

    assert _policy(args, 8) == TopP(0.3)


def test_unknown_names_are_refused_naming_the_known_ones():
    with pytest.raises(RuleError, match="unknown strategy 'nope'") as exc:
        CalibrateConfig(strategy="nope")
    assert all(name in str(exc.value) for name in strategy_names())
    with pytest.raises(RuleError, match=r"unknown rules \['nope'\]") as exc:
        SweepConfig(rules=("top_p", "nope"))
    assert all(name in str(exc.value) for name in sweep_names())
    with pytest.raises(RuleError, match="unknown rule 'nope'") as exc:
        get_rule("nope")
    assert all(r.name in str(exc.value) for r in all_rules())
    assert issubclass(RuleError, CalibrationError)  # callers catching CalibrationError still do


@pytest.mark.parametrize("rule", [
    Rule("top_p", TopP),
    Rule("scratch_a", TopP, sweep=(SweepEntry("entropy_global", lambda f, t: TopP(0.5)),)),
    Rule("scratch_b", TopP, flag=Flag("--top-p", "P", "", lambda p, args, n: TopP(p))),
])
def test_a_taken_name_is_refused_and_nothing_is_registered(scratch_registry, rule):
    before = all_rules()
    with pytest.raises(RuleError, match="taken|registered already"):
        register_rule(rule)
    assert all_rules() == before


def test_a_rule_is_validated_on_creation():
    with pytest.raises(RuleError, match="identifier"):
        Rule("top p", TopP)
    with pytest.raises(RuleError, match="Policy subclass"):
        Rule("scratch", dict)
    with pytest.raises(RuleError, match="no fit"):
        Rule("scratch", TopP, needs_target=True)


def test_calibrate_dispatches_to_the_rule(scratch_registry):
    from calibrate.helpers import controlled_mixtral

    seen = []

    def calibration(rule, job):
        seen.append((rule.name, job.target, job.k_values))
        return registry.get_rule("top_p").calibrate(job)

    register_rule(Rule("scratch_rule", TopP, fit=lambda f, t: TopP(0.5, 1, 2), calibration=calibration,
                       needs_target=True))
    model = controlled_mixtral()
    out = adaptk.calibrate.calibrate(model, random_ids(256), CalibrateConfig(
        strategy="scratch_rule", target_avg_k=1.5, verify=False, max_tokens=256, window=64))
    assert seen == [("scratch_rule", 1.5, (1, 2))]
    assert isinstance(out.policy, TopP) and out.policy_file.calibration.strategy == "scratch_rule"

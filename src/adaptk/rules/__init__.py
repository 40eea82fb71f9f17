"""Routing rules, one declaration each (``adaptk.rules.base.Rule``), and the registry every list
of rule names is derived from: calibrate's strategies, the sweep's rules, the CLI choices."""

from adaptk.rules.base import (
    CalibrationJob,
    FitInputs,
    Fitted,
    Flag,
    Rule,
    RuleError,
    SweepEntry,
    calibrate_to_target,
)
from adaptk.rules.registry import (
    all_rules,
    check_sweep_names,
    default_sweep_names,
    flagged_rules,
    get_rule,
    get_strategy,
    register_rule,
    strategy_names,
    sweep_fitters,
    sweep_names,
)

# isort: off
# one line per rule; the order here is the order of the strategies, sweep rules and inspect flags
from adaptk.rules import fixed  # noqa: F401
from adaptk.rules import theory  # noqa: F401
from adaptk.rules import percentile  # noqa: F401
from adaptk.rules import quality  # noqa: F401
from adaptk.rules import top_p  # noqa: F401
from adaptk.rules import ratio_skip  # noqa: F401
from adaptk.rules import ratio_skip_median  # noqa: F401
from adaptk.rules import layer_static  # noqa: F401
from adaptk.rules import random  # noqa: F401
# isort: on

__all__ = [
    "CalibrationJob", "FitInputs", "Fitted", "Flag", "Rule", "RuleError", "SweepEntry", "all_rules", "calibrate_to_target",
    "check_sweep_names", "default_sweep_names", "flagged_rules", "get_rule", "get_strategy", "register_rule",
    "strategy_names", "sweep_fitters", "sweep_names",
]

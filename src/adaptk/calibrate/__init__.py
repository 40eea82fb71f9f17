"""Calibration: router statistics in one pass, rule fitting, and versioned policy files.

This package's names below are calibrate's one public face: evaluate, cli, monitor and lm_eval
import only from here, never from its modules."""

from adaptk.calibrate.api import (
    CalibrateConfig,
    CalibrationOutcome,
    calibrate,
)
from adaptk.calibrate.collect import (
    LayerRouting,
    RouterRecorder,
    RouterStats,
    collect_router_stats,
)
from adaptk.calibrate.errors import BudgetNotMetError, CalibrationError, PolicyFileError
from adaptk.calibrate.fingerprint import data_fingerprint, model_fingerprint
from adaptk.calibrate.match import MatchResult, match_avg_k
from adaptk.calibrate.policy_file import (
    FORMAT_VERSION,
    PolicyFile,
    check_fits,
    check_policy_out,
    load_policy,
    load_policy_file,
    make_policy_file,
    save_policy_file,
)
from adaptk.calibrate.quality import (
    QualityBudget,
    layer_sensitivity_weights,
    quality_constrained,
    targets_for_level,
)
from adaptk.calibrate.search import bisect
from adaptk.calibrate.simulate import layer_k, simulated_avg_k
from adaptk.calibrate.strategies import (
    default_k_values,
    entropy_for_avg_k,
    ratio_skip_for_avg_k,
    ratio_skip_median,
    theory,
    top_p_for_avg_k,
)
from adaptk.calibrate.transfer import (
    BUDGET_SCOPES,
    Transfer,
    heldout_constrained,
    leave_documents_out,
    quality_summary,
)

__all__ = [
    "BUDGET_SCOPES", "FORMAT_VERSION", "STRATEGIES", "BudgetNotMetError", "CalibrateConfig", "CalibrationError",
    "CalibrationOutcome", "LayerRouting", "MatchResult", "PolicyFile", "PolicyFileError", "QualityBudget",
    "RouterRecorder", "RouterStats", "bisect", "calibrate", "check_fits", "check_policy_out", "collect_router_stats",
    "data_fingerprint", "default_k_values", "entropy_for_avg_k", "heldout_constrained", "layer_k", "layer_sensitivity_weights",
    "leave_documents_out", "load_policy", "load_policy_file", "make_policy_file", "match_avg_k", "model_fingerprint",
    "quality_constrained", "quality_summary", "ratio_skip_for_avg_k", "ratio_skip_median", "save_policy_file", "simulated_avg_k",
    "targets_for_level", "theory", "top_p_for_avg_k", "Transfer",
]


def __getattr__(name: str):
    # STRATEGIES, the names of the calibrate strategies, is derived from the rule registry when asked for
    if name == "STRATEGIES":
        from adaptk.rules import strategy_names

        return strategy_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Calibration: router statistics in one pass, rule fitting, and versioned policy files."""

from adaptk.calibrate.api import STRATEGIES, CalibrateConfig, CalibrationOutcome, calibrate
from adaptk.calibrate.collect import RouterRecorder, RouterStats, collect_router_stats
from adaptk.calibrate.errors import BudgetNotMetError, CalibrationError, PolicyFileError
from adaptk.calibrate.fingerprint import data_fingerprint, model_fingerprint
from adaptk.calibrate.match import MatchResult, match_avg_k
from adaptk.calibrate.policy_file import (
    FORMAT_VERSION,
    PolicyFile,
    load_policy,
    load_policy_file,
    make_policy_file,
    save_policy_file,
)
from adaptk.calibrate.quality import QualityBudget, quality_constrained

__all__ = [
    "FORMAT_VERSION", "STRATEGIES", "BudgetNotMetError", "CalibrateConfig", "CalibrationError",
    "CalibrationOutcome", "MatchResult", "PolicyFile", "PolicyFileError", "QualityBudget",
    "RouterRecorder", "RouterStats", "calibrate", "collect_router_stats", "data_fingerprint",
    "load_policy", "load_policy_file", "make_policy_file", "match_avg_k", "model_fingerprint", "quality_constrained",
    "save_policy_file",
]

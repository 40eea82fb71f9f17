"""Routing health of MoE models, patched by adaptk or not: statistics, windows and alerts,
drift against a baseline, exporters (JSONL, Prometheus, TensorBoard)."""

from adaptk.monitor import functional
from adaptk.monitor.alerts import Alert, AlertConfig, evaluate_alerts
from adaptk.monitor.drift import Baseline, DriftConfig, DriftReport, LayerDrift, score_drift
from adaptk.monitor.errors import BaselineError, MonitorError
from adaptk.monitor.monitor import MonitorConfig, RoutingMonitor, fingerprint
from adaptk.monitor.report import MonitorReport
from adaptk.monitor.state import LayerState, LayerSummary

__all__ = [
    "Alert",
    "AlertConfig",
    "Baseline",
    "BaselineError",
    "DriftConfig",
    "DriftReport",
    "LayerDrift",
    "LayerState",
    "LayerSummary",
    "MonitorConfig",
    "MonitorError",
    "MonitorReport",
    "RoutingMonitor",
    "evaluate_alerts",
    "fingerprint",
    "functional",
    "score_drift",
]

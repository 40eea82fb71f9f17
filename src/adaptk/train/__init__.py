"""``adaptk train``: small MoE causal LMs with really trained routers, and training-time routing controls."""

from adaptk.train.config import RoutingControls, TrainConfig
from adaptk.train.errors import OutputExistsError, ResumeError, TrainConfigError
from adaptk.train.loop import train
from adaptk.train.presets import PRESETS

__all__ = ["PRESETS", "OutputExistsError", "ResumeError", "RoutingControls", "TrainConfig", "TrainConfigError", "train"]

"""The versioned policy file: a policy, the model it fits, and how it was found.

Schema (pydantic, ``version`` = 1)::

    {"version": 1, "adaptk_version": "...", "model": {architecture, num_moe_layers,
     num_experts[], native_k[]}, "policy": Policy.to_dict(), "calibration": {...}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from adaptk.calibrate.errors import PolicyFileError
from adaptk.calibrate.fingerprint import fingerprint_diff, model_fingerprint
from adaptk.errors import PolicyError
from adaptk.outputs import OutputError, OutputExistsError, check_file, json_is_own, write_file
from adaptk.routing import Policy, policy_from_dict

FORMAT_VERSION = 1


class ModelFingerprint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    architecture: str
    num_moe_layers: int = Field(ge=1)
    num_experts: list[int]
    native_k: list[int]


class CalibrationInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    strategy: str
    data_sha256: str | None = None
    tokens: int = Field(default=0, ge=0)
    targets: dict[str, Any] = Field(default_factory=dict)
    forward_passes: int = Field(default=0, ge=0)
    measured: dict[str, Any] = Field(default_factory=dict)


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    adaptk_version: str = ""
    model: ModelFingerprint
    policy: dict[str, Any]
    calibration: CalibrationInfo

    @field_validator("version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > FORMAT_VERSION:
            raise ValueError(f"policy file version {v} is newer than this adaptk understands "
                             f"({FORMAT_VERSION}); upgrade adaptk")
        if v < 1:
            raise ValueError(f"policy file version must be >= 1, got {v}")
        return v

    def build_policy(self) -> Policy:
        try:
            return policy_from_dict(self.policy)
        except PolicyError as exc:
            raise PolicyFileError(f"policy file holds an invalid policy: {exc}") from exc


def make_policy_file(model: nn.Module, policy: Policy, calibration: dict) -> PolicyFile:
    from adaptk import __version__

    return PolicyFile(version=FORMAT_VERSION, adaptk_version=__version__,
                      model=ModelFingerprint(**model_fingerprint(model)), policy=policy.to_dict(),
                      calibration=CalibrationInfo(**calibration))


def _is_policy_file(data: dict) -> bool:
    return "version" in data and isinstance(data.get("policy"), dict) and isinstance(data.get("model"), dict)


is_policy_file = json_is_own(_is_policy_file)


def check_policy_out(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate where a policy file will go, without writing: an existing file is replaced only if it
    is an adaptk policy file, or with ``overwrite``; a folder, or a file in the way, is refused."""
    try:
        return check_file(path, "policy", is_policy_file, overwrite=overwrite)
    except OutputExistsError:
        raise
    except OutputError as exc:
        raise PolicyFileError(str(exc)) from exc


def save_policy_file(pf: PolicyFile, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write atomically (temp file in the same folder, then rename): never a partial file, and never
    over a file that is not an adaptk policy file unless ``overwrite`` (see :mod:`adaptk.outputs`)."""
    try:
        return write_file(path, pf.model_dump_json(indent=2), "policy", is_policy_file, overwrite=overwrite)
    except OutputExistsError:
        raise
    except OutputError as exc:
        raise PolicyFileError(str(exc)) from exc


def load_policy_file(path: str | os.PathLike, model: nn.Module | None = None) -> PolicyFile:
    """Read and validate; with ``model``, also check that the file was made for such a model."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PolicyFileError(f"policy file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyFileError(f"policy file {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or "version" not in raw:
        raise PolicyFileError(f"policy file {path} has no 'version' field; is it an adaptk policy file?")
    try:
        pf = PolicyFile.model_validate(raw)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PolicyFileError(f"policy file {path} is malformed: {msgs}") from exc
    pf.build_policy()
    if model is not None:
        check_fits(pf, model, str(path))
    return pf


def load_policy(path: str | os.PathLike, model: nn.Module) -> Policy:
    """The policy of a policy file, after checking that the file fits ``model``."""
    return load_policy_file(path, model).build_policy()


def check_fits(pf: PolicyFile, model: nn.Module, where: str = "policy file") -> None:
    diff = fingerprint_diff(pf.model.model_dump(), model_fingerprint(model))
    if diff:
        raise PolicyFileError(f"{where} was made for another model: " + "; ".join(diff))

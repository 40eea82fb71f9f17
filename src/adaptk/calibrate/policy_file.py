"""The versioned policy file: a policy, the model it fits, and how it was found.

Schema (pydantic, ``version`` = 2)::

    {"version": 2, "adaptk_version": "...", "model": {architecture, num_moe_layers,
     num_experts[], native_k[], weights_sha256}, "policy": Policy.to_dict(), "calibration": {...}}

``model.weights_sha256`` (new in version 2) is ``weights_fingerprint`` of the checkpoint the
policy was calibrated on: its thresholds are fitted to those routers, and a policy loaded against
another checkpoint of the same shape (a fine-tune, another seed) is warned about, or refused
under ``strict=True``. Version 1 files (no weights fingerprint) still load, with a logged note.
The version was bumped, not only a field added, so that an older adaptk refuses a new file with
"newer than this adaptk understands; upgrade adaptk" rather than an unknown-field error.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from torch import nn

from adaptk.calibrate.errors import PolicyFileError
from adaptk.calibrate.fingerprint import fingerprint_diff, model_fingerprint, short, weights_fingerprint
from adaptk.errors import PolicyError
from adaptk.models import find_moe_layers
from adaptk.outputs import OutputError, OutputExistsError, check_file, json_is_own, write_file
from adaptk.routing import Policy, policy_from_dict

log = logging.getLogger(__name__)

FORMAT_VERSION = 2


class ModelFingerprint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    architecture: str
    num_moe_layers: int = Field(ge=1)
    num_experts: list[int]
    native_k: list[int]
    weights_sha256: str | None = None  # version >= 2; None: the routers could not be read


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
    _policy: Policy | None = PrivateAttr(default=None)

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
        """The file's policy (built once: the same object each call, so that what was checked and
        warned about on load is what gets patched in)."""
        if self._policy is None:
            try:
                self._policy = policy_from_dict(self.policy)
            except PolicyError as exc:
                raise PolicyFileError(f"policy file holds an invalid policy: {exc}") from exc
        return self._policy


def make_policy_file(model: nn.Module, policy: Policy, calibration: dict) -> PolicyFile:
    from adaptk import __version__

    return PolicyFile(version=FORMAT_VERSION, adaptk_version=__version__,
                      model=ModelFingerprint(**model_fingerprint(model), weights_sha256=weights_fingerprint(model)),
                      policy=policy.to_dict(),
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


def load_policy_file(path: str | os.PathLike, model: nn.Module | None = None, *, strict: bool = False) -> PolicyFile:
    """Read and validate; with ``model``, also check that the file was made for such a model
    (``check_fits``: another shape is an error; other weights a warning, an error if ``strict``)."""
    path = Path(path)
    if path.is_dir():
        raise PolicyFileError(f"policy file {path} is a folder; pass a policy file "
                              "(the JSON file written by `adaptk calibrate --out FILE`)")
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
        check_fits(pf, model, f"policy file {path}", strict=strict)
    return pf


def load_policy(path: str | os.PathLike, model: nn.Module, *, strict: bool = False) -> Policy:
    """The policy of a policy file, after checking that the file fits ``model``."""
    return load_policy_file(path, model, strict=strict).build_policy()


def check_fits(pf: PolicyFile, model: nn.Module, where: str = "policy file", *, strict: bool = False) -> None:
    """Raise ``PolicyFileError`` when ``pf`` was made for a model of another shape, or holds a
    policy that cannot route ``model``; warn (raise if ``strict``) when it was calibrated on other
    weights; log the policy's warnings for this model (k above native k, a k that never changes)."""
    layers = find_moe_layers(model)
    diff = fingerprint_diff(pf.model.model_dump(), model_fingerprint(model))
    if diff:
        raise PolicyFileError(f"{where} was made for another model: " + "; ".join(diff))
    _check_weights(pf, model, layers, where, strict)
    policy = pf.build_policy()
    try:
        for layer in layers:
            policy.validate_for(len(layers), layer.num_experts, layer.native_k)
    except PolicyError as exc:
        raise PolicyFileError(f"{where} holds a policy that cannot route this model: {exc}") from exc


def _check_weights(pf: PolicyFile, model: nn.Module, layers, where: str, strict: bool) -> None:
    recorded = pf.model.weights_sha256
    if recorded is None:
        log.info("%s (format version %d) records no weights fingerprint: it cannot be checked that its "
                 "thresholds were fitted on this checkpoint; recalibrate with `adaptk calibrate` to record one",
                 where, pf.version)
        return
    actual = weights_fingerprint(model, layers)
    if actual is None:
        log.info("%s: the model's router weights are not loaded (meta device); weights fingerprint not checked",
                 where)
        return
    if actual == recorded:
        return
    msg = (f"{where} was calibrated on another checkpoint of this architecture: router weights fingerprint "
           f"{short(recorded)} in the file, {short(actual)} for this model, so the policy was fitted on "
           "other weights and the average k and quality it records do not hold here; recalibrate on this "
           "model with `adaptk calibrate`")
    if strict:
        raise PolicyFileError(msg)
    log.warning("%s (pass strict=True / --strict to refuse)", msg)

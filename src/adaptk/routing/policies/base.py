"""The policy base class, the ``POLICIES`` registry and the helpers policy classes share.

A policy sees, for one MoE layer, the router's full distribution over the N experts and the
probabilities of the experts in the model's own ranking order, and returns k per token. Which
experts are kept is always the model's own ranking (its top-k rule, group limits, biases); the
policy decides only how many. Shapes: T tokens, N experts, K = the policy's ``kmax``.

Policies are frozen dataclasses validated in ``__post_init__``; ``to_dict``/``policy_from_dict``
round-trip them through the registry ``POLICIES`` so that policy files stay loadable.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any, ClassVar

import torch

from adaptk.errors import PolicyError
from adaptk.routing.select import RoutingDecision, decide

log = logging.getLogger(__name__)

POLICIES: dict[str, type[Policy]] = {}

# entropies are computed in float32: a threshold this close above log N still counts as within range
LOG_N_TOL = 1e-4


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy loadable by name from a policy file."""
    POLICIES[cls.name] = cls
    return cls


def policy_from_dict(data: dict[str, Any]) -> Policy:
    """Build a policy from ``Policy.to_dict()`` output."""
    if not isinstance(data, dict) or "rule" not in data:
        raise PolicyError(f"a policy must be a mapping with a 'rule' key, got {data!r}")
    rule = data["rule"]
    if rule not in POLICIES:
        raise PolicyError(f"unknown policy rule {rule!r}; known rules: {sorted(POLICIES)}")
    params = {k: v for k, v in data.items() if k != "rule"}
    try:
        return POLICIES[rule](**params)
    except TypeError as exc:
        raise PolicyError(f"bad parameters for policy {rule!r}: {exc}") from exc


def pick_layer(values: tuple, layer: int, what: str) -> Any:
    """Layer ``layer``'s entry of a per-layer parameter list."""
    if layer >= len(values):
        raise PolicyError(
            f"{what} has {len(values)} per-layer entries but MoE layer {layer} was routed; "
            "give one entry per MoE layer of the model"
        )
    return values[layer]


def cached_thresholds(policy: Policy, key: tuple, values, device: torch.device) -> torch.Tensor:
    """``Policy.rank_thresholds`` as a float32 tensor, built once per key in the policy's cache
    (``values()`` is called only on a miss: this runs once per layer per step)."""
    cache = policy.__dict__.get("_tau_cache")
    if cache is None:
        cache = policy.__dict__["_tau_cache"] = {}
    tau = cache.get(key)
    if tau is None:
        tau = cache[key] = torch.tensor(values(), dtype=torch.float32, device=device)
    return tau


def check_k_values(kv: tuple) -> None:
    """A policy's k values: a non-empty, strictly increasing tuple of integers >= 1."""
    if not kv or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in kv):
        raise PolicyError(f"k_values must be a non-empty list of integers >= 1, got {kv!r}")
    if any(b <= a for a, b in zip(kv, kv[1:])):
        raise PolicyError(f"k_values must be strictly increasing, got {list(kv)}")


def freeze(value: Any) -> Any:
    """Lists (nested) as tuples, so that a frozen policy built from a policy file hashes and compares."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


class Policy:
    """Base class. Subclasses define ``name``, ``kmax`` and ``choose_k``."""

    name: ClassVar[str] = "policy"

    def kmax(self, native_k: int | None) -> int:
        raise NotImplementedError

    def choose_k(
        self,
        probs: torch.Tensor,
        ranked: torch.Tensor,
        layer: int,
        native_k: int | None,
        entropy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """probs [T, N] f32, ranked [T, K] f32 (probabilities in ranking order), entropy [T] of
        ``probs`` when the caller already has it -> k [T] int64."""
        raise NotImplementedError

    def per_layer_count(self) -> int | None:
        """How many MoE layers per-layer parameters were given for (None: shared by all)."""
        return None

    def rank_thresholds(self, layer: int, native_k: int | None, device: torch.device) -> torch.Tensor | None:
        """Entropy thresholds by rank, for policies whose k depends on the routing entropy H
        alone, non-decreasingly: [K] float32 with the token keeping its r-th ranked expert iff
        H >= τ[r] (τ[0] = -inf; a NaN entropy keeps all K). ``decide`` then builds the kept
        mask in one comparison instead of calling ``choose_k``. None (the default): use
        ``choose_k``."""
        return None

    def validate_for(self, num_layers: int, num_experts: int, native_k: int | None, *, warn: bool = True) -> None:
        """Raise ``PolicyError`` if this policy cannot route a model of this shape; with ``warn``,
        log (once per policy object and message) what is legal but probably a mistake
        (``warnings_for``)."""
        kmax = self.kmax(native_k)
        if kmax > num_experts:
            raise PolicyError(
                f"{self.name} keeps up to {kmax} experts but the layer has only {num_experts}; "
                f"use k values of at most {num_experts}"
            )
        count = self.per_layer_count()
        if count is not None and count != num_layers:
            raise PolicyError(
                f"{self.name} has per-layer parameters for {count} MoE layers but the model has "
                f"{num_layers}; give exactly one entry per MoE layer"
            )
        if warn:
            logged = self.__dict__.setdefault("_warned", set())
            for msg in self.warnings_for(num_layers, num_experts, native_k):
                if msg not in logged:
                    logged.add(msg)
                    log.warning("%s", msg)

    def constant_k(self, layer: int, num_experts: int, native_k: int | None) -> int | None:
        """The k that every token gets on MoE layer ``layer`` whatever its routing, or None when k
        can vary from token to token (the default)."""
        return None

    def fixed_by_design(self) -> bool:
        """True when a fixed k is the point (FixedTopK, one k value): never warned about."""
        return False

    def warnings_for(self, num_layers: int, num_experts: int, native_k: int | None) -> list[str]:
        """What is legal on a model of this shape but probably a mistake (pure: messages only):
        more experts than the model was trained with, or a policy that can never change k."""
        out = []
        kmax = self.kmax(native_k)
        if native_k is not None and kmax > native_k:
            out.append(f"{self.name} keeps up to {kmax} experts per token but the model was trained with "
                       f"top-{native_k}: tokens get more experts than in training; use k values of at most "
                       f"{native_k} unless this is intended")
        ks = [self.constant_k(i, num_experts, native_k) for i in range(max(num_layers, 1))]
        if not self.fixed_by_design() and all(k is not None for k in ks):
            what = f"k={ks[0]}" if len(set(ks)) == 1 else "a fixed k per layer (" + ", ".join(
                f"layer {i}: {k}" for i, k in enumerate(ks)) + ")"
            out.append(f"{self.name} can never change k on this model (N={num_experts} experts): every token "
                       f"gets {what}. {self._constant_hint(num_experts)}")
        return out

    def _constant_hint(self, num_experts: int) -> str:
        return "Use FixedTopK for a fixed k, or recalibrate with `adaptk calibrate`"

    def __call__(
        self,
        probs: torch.Tensor,
        layer: int = 0,
        native_k: int | None = None,
        renormalize: bool = True,
    ) -> RoutingDecision:
        """Route a distribution [T, N] on its own (ranking = the probabilities).

        Returns indices [T, K] (highest weight first, sentinel N beyond k), weights [T, K]
        (renormalised over the kept experts unless ``renormalize=False``), k [T], entropy [T].
        """
        if probs.dim() != 2:
            raise PolicyError(f"probs must be [tokens, experts], got shape {tuple(probs.shape)}")
        self.validate_for(max(layer + 1, self.per_layer_count() or 0), probs.shape[-1], native_k, warn=False)
        p = probs.float()
        decision = decide(self, p, p, layer=layer, native_k=native_k, sorted_topk=True)
        vals = p.gather(1, decision.indices.clamp_max(p.shape[-1] - 1))
        vals = vals.masked_fill(decision.drop, 0.0)
        if renormalize:
            vals = vals / vals.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        return RoutingDecision(decision.indices, vals, decision.k, decision.entropy)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.name}
        for f in fields(self):  # type: ignore[arg-type]
            if f.init:
                out[f.name] = to_lists(getattr(self, f.name))
        return out


def to_lists(value: Any) -> Any:
    """Tuples (nested) as lists, for JSON."""
    if isinstance(value, tuple):
        return [to_lists(v) for v in value]
    return value

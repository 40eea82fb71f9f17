"""Routing policies: how many experts each token keeps.

A policy sees, for one MoE layer, the router's full distribution over the N experts and the
probabilities of the experts in the model's own ranking order, and returns k per token. Which
experts are kept is always the model's own ranking (its top-k rule, group limits, biases); the
policy decides only how many. Shapes: T tokens, N experts, K = the policy's ``kmax``.

Policies are frozen dataclasses validated in ``__post_init__``; ``to_dict``/``policy_from_dict``
round-trip them through the registry ``POLICIES`` so that policy files stay loadable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from adaptk.errors import PolicyError
from adaptk.routing.entropy import entropy_nats, tempered
from adaptk.routing.select import RoutingDecision, decide

log = logging.getLogger(__name__)

POLICIES: dict[str, type[Policy]] = {}

# entropies are computed in float32: a threshold this close above log N still counts as within range
_LOG_N_TOL = 1e-4


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


def _pick(values: tuple, layer: int, what: str) -> Any:
    """Layer ``layer``'s entry of a per-layer parameter list."""
    if layer >= len(values):
        raise PolicyError(
            f"{what} has {len(values)} per-layer entries but MoE layer {layer} was routed; "
            "give one entry per MoE layer of the model"
        )
    return values[layer]


def _cached_thresholds(policy: Policy, key: tuple, values, device: torch.device) -> torch.Tensor:
    """``Policy.rank_thresholds`` as a float32 tensor, built once per key in the policy's cache
    (``values()`` is called only on a miss: this runs once per layer per step)."""
    cache = policy.__dict__.get("_tau_cache")
    if cache is None:
        cache = policy.__dict__["_tau_cache"] = {}
    tau = cache.get(key)
    if tau is None:
        tau = cache[key] = torch.tensor(values(), dtype=torch.float32, device=device)
    return tau


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
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
                out[f.name] = _to_lists(getattr(self, f.name))
        return out


def _to_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value


@register_policy
@dataclass(frozen=True)
class FixedTopK(Policy):
    """The baseline: every token keeps its top ``k`` experts."""

    name: ClassVar[str] = "fixed_top_k"
    k: int

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise PolicyError(f"FixedTopK needs an integer k >= 1, got {self.k!r}")

    def kmax(self, native_k: int | None) -> int:
        return self.k

    def constant_k(self, layer, num_experts, native_k):
        return self.k

    def fixed_by_design(self) -> bool:
        return True

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        return torch.full((probs.shape[0],), self.k, dtype=torch.long, device=probs.device)

    def rank_thresholds(self, layer, native_k, device):
        return _cached_thresholds(self, ("all", device), lambda: [-math.inf] * self.k, device)


@register_policy
@dataclass(frozen=True)
class EntropyThreshold(Policy):
    """The paper's rule (§3.3, §4): k = k_values[i] for the first i with H < thresholds[i],
    else k_values[-1].

    ``thresholds`` holds len(k_values) - 1 non-decreasing entropies in nats, or one such list
    per MoE layer. ``temperature`` τ re-tempers the distribution before the entropy is taken
    (softmax(logits / τ) for softmax routers, §2.2); the experts kept and their weights are not
    changed by τ.
    """

    name: ClassVar[str] = "entropy_threshold"
    k_values: tuple[int, ...]
    thresholds: tuple[float, ...] | tuple[tuple[float, ...], ...]
    temperature: float = 1.0
    _table: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "k_values", _freeze(self.k_values))
        object.__setattr__(self, "thresholds", _freeze(self.thresholds))
        kv = self.k_values
        if not kv or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in kv):
            raise PolicyError(f"k_values must be a non-empty list of integers >= 1, got {kv!r}")
        if any(b <= a for a, b in zip(kv, kv[1:])):
            raise PolicyError(f"k_values must be strictly increasing, got {list(kv)}")
        if not (isinstance(self.temperature, int | float) and self.temperature > 0):
            raise PolicyError(f"temperature must be > 0, got {self.temperature!r}")
        rows = self.thresholds if self._is_per_layer() else (self.thresholds,)
        for i, row in enumerate(rows):
            where = f" (layer {i})" if self._is_per_layer() else ""
            if len(row) != len(kv) - 1:
                raise PolicyError(
                    f"EntropyThreshold with k_values {list(kv)} needs {len(kv) - 1} thresholds"
                    f"{where}, got {len(row)}: threshold i separates k_values[i] from k_values[i+1]"
                )
            if any(not isinstance(t, int | float) or math.isnan(t) for t in row):
                raise PolicyError(f"thresholds must be numbers{where}, got {list(row)}")
            if any(b < a for a, b in zip(row, row[1:])):
                raise PolicyError(f"thresholds must be non-decreasing{where}, got {list(row)}")
            if any(t < 0 for t in row):
                raise PolicyError(
                    f"thresholds must be >= 0{where}, got {list(row)}: they are routing entropies in nats, "
                    "which are never negative (0 = all weight on one expert, log N = uniform); "
                    "use 0 to always keep the larger k"
                )

    def _is_per_layer(self) -> bool:
        return bool(self.thresholds) and isinstance(self.thresholds[0], tuple)

    @classmethod
    def from_fractions(
        cls,
        k_values: Sequence[int],
        alphas: Sequence[float],
        num_experts: int,
        temperature: float = 1.0,
    ) -> EntropyThreshold:
        """Theory-based thresholds θ_i = α_i · log N (§4.2.1)."""
        if num_experts < 2:
            raise PolicyError(f"num_experts must be >= 2, got {num_experts}")
        log_n = math.log(num_experts)
        return cls(tuple(k_values), tuple(float(a) * log_n for a in alphas), temperature)

    def kmax(self, native_k: int | None) -> int:
        return self.k_values[-1]

    def constant_k(self, layer, num_experts, native_k):
        """k = k_values[#thresholds <= H] for H in [0, log N]: constant unless a threshold lies in (0, log N]."""
        th = torch.tensor(self.layer_thresholds(layer), dtype=torch.float32).tolist()  # as routing compares them
        if not th:
            return self.k_values[0]
        if num_experts < 2:
            return None
        top = math.log(num_experts) + _LOG_N_TOL
        if any(0 < t <= top for t in th):
            return None
        return self.k_values[sum(t <= 0 for t in th)]

    def fixed_by_design(self) -> bool:
        return len(self.k_values) == 1

    def _constant_hint(self, num_experts):
        return (f"Routing entropies lie in [0, log N = {math.log(num_experts):.4f}] nats, so a threshold must lie "
                f"in (0, {math.log(num_experts):.4f}] to separate tokens (got {list(self.thresholds)}): "
                "recalibrate with `adaptk calibrate`, or use FixedTopK for a fixed k")

    def warnings_for(self, num_layers, num_experts, native_k):
        out = super().warnings_for(num_layers, num_experts, native_k)
        if num_experts >= 2 and not any(m.startswith(f"{self.name} can never change k") for m in out):
            top = math.log(num_experts) + _LOG_N_TOL
            rows = self.thresholds if self._is_per_layer() else (self.thresholds,)
            high = sorted({t for row in rows for t in row if t > top})
            if high:
                out.append(f"{self.name} thresholds {high} lie above log N = {math.log(num_experts):.4f} nats, "
                           f"the largest routing entropy of N={num_experts} experts: the k values past them are "
                           "never used")
        return out

    def per_layer_count(self) -> int | None:
        return len(self.thresholds) if self._is_per_layer() else None

    def layer_thresholds(self, layer: int) -> tuple[float, ...]:
        return _pick(self.thresholds, layer, "thresholds") if self._is_per_layer() else self.thresholds

    def rank_thresholds(self, layer, native_k, device):
        if self.temperature != 1.0:
            return None
        return _cached_thresholds(self, (layer, device), lambda: self._rank_thresholds(layer), device)

    def _rank_thresholds(self, layer: int) -> list[float]:
        """Rank r is kept from the first threshold above which k > r (k_values increase)."""
        th, kv = self.layer_thresholds(layer), self.k_values
        first = [next(i for i, k in enumerate(kv) if k > r) for r in range(kv[-1])]
        return [th[i - 1] if i > 0 else -math.inf for i in first]

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        if self.temperature == 1.0 and entropy is not None:
            h = entropy  # [T], computed once by the caller
        else:
            h = entropy_nats(tempered(probs.float(), float(self.temperature)))  # [T], softmax output: unchecked
        key = (probs.device, layer)
        if key not in self._table:
            th = torch.tensor(self.layer_thresholds(layer), dtype=torch.float32, device=probs.device)
            kv = torch.tensor(self.k_values, dtype=torch.long, device=probs.device)
            self._table[key] = (th, kv)
        th, kv = self._table[key]
        # first i with H < th[i] == number of thresholds <= H (thresholds non-decreasing);
        # a NaN entropy (non-finite router output, counted by the patch) sorts last: kmax
        level = torch.bucketize(h, th, right=True)  # [T]
        return kv.index_select(0, level)  # [T]


@register_policy
@dataclass(frozen=True)
class TopP(Policy):
    """Post-hoc top-p: the smallest set of top-ranked experts whose probability reaches ``p``,
    clamped to [min_k, max_k] (max_k defaults to the model's native k)."""

    name: ClassVar[str] = "top_p"
    p: float
    min_k: int = 1
    max_k: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.p, int | float) or not 0.0 < self.p <= 1.0:
            raise PolicyError(f"TopP needs 0 < p <= 1, got {self.p!r}")
        if not isinstance(self.min_k, int) or self.min_k < 1:
            raise PolicyError(f"min_k must be an integer >= 1, got {self.min_k!r}")
        if self.max_k is not None and (not isinstance(self.max_k, int) or self.max_k < self.min_k):
            raise PolicyError(f"max_k must be an integer >= min_k={self.min_k}, got {self.max_k!r}")

    def kmax(self, native_k: int | None) -> int:
        if self.max_k is not None:
            return self.max_k
        if native_k is None:
            raise PolicyError("TopP without max_k needs the model's native k: pass max_k=")
        return max(native_k, self.min_k)

    def constant_k(self, layer, num_experts, native_k):
        kmax = self.kmax(native_k)
        return kmax if self.min_k >= kmax else None

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        cum = ranked.cumsum(dim=-1)  # [T, K]
        k = (cum < self.p).sum(dim=-1) + 1  # first prefix whose mass reaches p
        return k.clamp(self.min_k, ranked.shape[-1])


@register_policy
@dataclass(frozen=True)
class RatioSkip(Policy):
    """Ratio skipping of "Not All Experts are Equal" (Lu et al. 2024): keep the top expert, and
    each later one of the top max_k whose weight is at least ``beta`` times the top one's.

    ``beta`` is one number or one per MoE layer (the paper sets it per layer).
    """

    name: ClassVar[str] = "ratio_skip"
    beta: float | tuple[float, ...]
    max_k: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", _freeze(self.beta))
        betas = self.beta if isinstance(self.beta, tuple) else (self.beta,)
        if not betas or any(not isinstance(b, int | float) or not 0.0 <= b <= 1.0 for b in betas):
            raise PolicyError(f"RatioSkip needs 0 <= beta <= 1 (one value or one per layer), got {self.beta!r}")
        if self.max_k is not None and (not isinstance(self.max_k, int) or self.max_k < 1):
            raise PolicyError(f"max_k must be an integer >= 1, got {self.max_k!r}")

    def kmax(self, native_k: int | None) -> int:
        if self.max_k is not None:
            return self.max_k
        if native_k is None:
            raise PolicyError("RatioSkip without max_k needs the model's native k: pass max_k=")
        return native_k

    def constant_k(self, layer, num_experts, native_k):
        """beta = 0 keeps all max_k experts; max_k = 1 keeps one."""
        kmax = self.kmax(native_k)
        if kmax == 1:
            return 1
        betas = self.beta if isinstance(self.beta, tuple) else (self.beta,) * (layer + 1)
        return kmax if layer < len(betas) and betas[layer] == 0 else None

    def per_layer_count(self) -> int | None:
        return len(self.beta) if isinstance(self.beta, tuple) else None

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        beta = float(_pick(self.beta, layer, "beta") if isinstance(self.beta, tuple) else self.beta)
        keep_more = ranked[:, 1:] >= beta * ranked[:, :1]  # [T, K-1]
        # keep a prefix: stop at the first expert below the ratio
        return 1 + keep_more.long().cumprod(dim=-1).sum(dim=-1)

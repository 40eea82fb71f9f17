"""``RandomShares``: a control policy that gives a fixed share of each layer's tokens each k,
the tokens picked by a seeded draw that never looks at the routing.

The draw is a counter-based hash, not a random-number generator: token position t (the row of
the layer's router input, batch and sequence flattened) on MoE layer ``layer`` gets the uniform
number u = splitmix64(key + (t + 1)·γ) / 2^64 with key = blake2b(seed, layer). So a decision is a
pure function of (seed, layer, t): the same on every run, device and batch length (a longer
batch only adds positions), independent of the router's scores and entropy, with no generator
state to carry, and computed on the router's own device in a few integer operations.
A token at position t then gets k_values[i] for the i with c_{i-1} <= u < c_i, c the cumulative
shares, so each k gets its share of tokens up to binomial noise.

Registered with ``register_policy`` when ``adaptk.rules`` is imported (``adaptk.calibrate``
imports it), so policy files holding it load.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from adaptk.errors import PolicyError
from adaptk.routing.policies.base import Policy, check_k_values, freeze, pick_layer, register_policy

_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment (2^64 / golden ratio)
_MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """A 64-bit unsigned integer as the int64 with the same bits (torch has no uint64 arithmetic)."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (``>>`` on int64 is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def draw_key(seed: int, layer: int) -> int:
    """The 64-bit key of one (seed, layer) pair, stable across runs and Python versions."""
    digest = hashlib.blake2b(f"adaptk.random:{seed}:{layer}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def token_uniforms(key: int, num_tokens: int, device: torch.device) -> torch.Tensor:
    """u [T] float32 in [0, 1), multiples of 2^-24: splitmix64 of positions 0..T-1 under ``key``
    (int64 products wrap, as the unsigned 64-bit ones do)."""
    t = torch.arange(1, num_tokens + 1, dtype=torch.int64, device=device)  # [T]
    z = t * _signed(_GAMMA) + _signed(key)  # [T]
    z = (z ^ _srl(z, 30)) * _signed(_MIX[0])
    z = (z ^ _srl(z, 27)) * _signed(_MIX[1])
    z = z ^ _srl(z, 31)
    return _srl(z, 40).float() * 2.0**-24  # the top 24 bits: exact in float32


@register_policy
@dataclass(frozen=True)
class RandomShares(Policy):
    """Random control: on each MoE layer a share ``shares[i]`` of the tokens keeps
    ``k_values[i]`` experts, the tokens picked by a draw seeded by ``seed`` (see the module).

    ``shares`` holds one non-negative share per k value summing to 1, or one such list per MoE layer.
    """

    name: ClassVar[str] = "random"
    k_values: tuple[int, ...]
    shares: tuple[float, ...] | tuple[tuple[float, ...], ...]
    seed: int = 0
    _table: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "k_values", freeze(self.k_values))
        object.__setattr__(self, "shares", freeze(self.shares))
        kv = self.k_values
        check_k_values(kv)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise PolicyError(f"seed must be an integer >= 0, got {self.seed!r}")
        for i, row in enumerate(self._rows()):
            where = f" (layer {i})" if self._is_per_layer() else ""
            if (len(row) != len(kv) or any(not isinstance(s, int | float) or not s >= 0 for s in row)
                    or not math.isclose(sum(row), 1.0, abs_tol=1e-6)):
                raise PolicyError(f"RandomShares with k_values {list(kv)} needs {len(kv)} non-negative shares "
                                  f"summing to 1{where}, got {list(row)}")

    def _is_per_layer(self) -> bool:
        return bool(self.shares) and isinstance(self.shares[0], tuple)

    def _rows(self) -> tuple[tuple[float, ...], ...]:
        return self.shares if self._is_per_layer() else (self.shares,)

    def layer_shares(self, layer: int) -> tuple[float, ...]:
        return pick_layer(self.shares, layer, "shares") if self._is_per_layer() else self.shares

    def kmax(self, native_k: int | None) -> int:
        return self.k_values[-1]

    def per_layer_count(self) -> int | None:
        return len(self.shares) if self._is_per_layer() else None

    def constant_k(self, layer, num_experts, native_k):
        if self._is_per_layer() and layer >= len(self.shares):
            return None  # validate_for reports the missing layers
        used = [k for k, s in zip(self.k_values, self.layer_shares(layer)) if s > 0]
        return used[0] if len(used) == 1 else None

    def fixed_by_design(self) -> bool:
        return len(self.k_values) == 1

    def _constant_hint(self, num_experts: int) -> str:
        return "Give shares to more than one k value, or use FixedTopK for a fixed k"

    def choose_k(self, probs, ranked, layer, native_k, entropy=None):
        key = (layer, probs.device)
        if key not in self._table:
            cum, total = [], 0.0
            for s in self.layer_shares(layer)[:-1]:
                total += s
                cum.append(total)
            self._table[key] = (draw_key(self.seed, layer),
                                torch.tensor(cum, dtype=torch.float32, device=probs.device),
                                torch.tensor(self.k_values, dtype=torch.long, device=probs.device))
        draw, cum, kv = self._table[key]
        u = token_uniforms(draw, probs.shape[0], probs.device)  # [T]
        return kv.index_select(0, torch.bucketize(u, cum, right=True))  # [T]: number of c_i <= u

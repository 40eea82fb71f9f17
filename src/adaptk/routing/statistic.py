"""The one protocol of adaptk's routing-statistics collectors (torchmetrics-style).

Four collectors keep running statistics of a layer's routing, each for its own caller:
``adaptk.routing.stats.LayerStats`` (the patched model's counters), ``adaptk.monitor.state.LayerState``
(the routing monitor's sufficient statistics), ``adaptk.calibrate.collect.LayerRecorder`` (the
entropies a calibration fits) and ``adaptk.train.health.LoadAccumulator`` (the expert load
between two training logs). Each is a ``Statistic``:

- ``update(...)``: add one batch (its arguments are the caller's natural ones);
- ``compute()``: the collector's report object, derived from the state, the state unchanged;
- ``merge(other)``: add another collector's statistics of the same layer shape to these, in
  place, as if this one had seen the other's batches after its own (exact for every count;
  float moments to float rounding); a collector of another shape raises ``StatisticError``;
- ``reset()``: back to the empty state;
- ``state_dict()``: the state as plain Python (JSON-able), with the shape it was built for;
- ``load_state_dict(state)``: replace the state by a ``state_dict()``'s; one of another shape
  or with a missing or malformed entry raises ``StatisticError`` and changes nothing.

This module imports no tensor library: the protocol and its helpers only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from adaptk.errors import AdaptkError

R_co = TypeVar("R_co", covariant=True)
S = TypeVar("S", bound="Statistic")


class StatisticError(AdaptkError, ValueError):
    """Two collectors of different shapes were merged, or a saved state does not fit a collector."""


@runtime_checkable
class Statistic(Protocol[R_co]):
    """A running statistic of a layer's routing: see the module docstring."""

    def update(self, *args: Any, **kwargs: Any) -> None: ...

    def compute(self) -> R_co: ...

    def merge(self, other: Any) -> None: ...

    def reset(self) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def merged(first: S, others: Iterable[S]) -> S:
    """``first`` with each of ``others`` merged into it, in order (``first`` changes; returned)."""
    for other in others:
        first.merge(other)
    return first


def check_shape(kind: str, mine: Mapping[str, Any], theirs: Mapping[str, Any], what: str,
                error: type[StatisticError] = StatisticError) -> None:
    """Raise ``error`` unless ``theirs`` has every key of ``mine`` with the same value: ``kind``
    names the collector, ``what`` the other one ("the merged statistics", "the saved state")."""
    bad = {key: (value, theirs.get(key, "missing")) for key, value in mine.items() if theirs.get(key) != value}
    if bad:
        shown = ", ".join(f"{key} {want!r} here, {got!r} in {what}" for key, (want, got) in bad.items())
        raise error(f"{kind}: {what} has another shape ({shown}); merge or load only statistics of "
                             f"the same layer shape")


def entries(kind: str, state: Mapping[str, Any], keys: Iterable[str],
            error: type[StatisticError] = StatisticError) -> dict[str, Any]:
    """The ``keys`` of a saved ``state``, or ``error`` naming the missing ones."""
    if not isinstance(state, Mapping):
        raise error(f"{kind}: a saved state is a dict (state_dict()'s), got {type(state).__name__}")
    keys = list(keys)
    missing = [key for key in keys if key not in state]
    if missing:
        raise error(f"{kind}: the saved state lacks {', '.join(missing)}; pass a state_dict() of this "
                             f"collector")
    return {key: state[key] for key in keys}

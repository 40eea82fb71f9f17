"""``MonitorReport``: the per-layer summaries a monitor computed, with a table and JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adaptk.monitor.state import LayerSummary


@dataclass(frozen=True)
class MonitorReport:
    layers: list[LayerSummary]
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.layers[0].tokens if self.layers else 0

    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "layers": [s.to_dict() for s in self.layers]}

    def table(self) -> str:
        """A plain-text table, one row per layer."""
        head = (f"{'layer':>5} {'tokens':>8} {'H mean':>7} {'H norm':>6} {'avg k':>6} {'loadCV':>6} "
                f"{'max/mean':>8} {'gini':>5} {'dead':>5} {'effN':>6} {'MI':>6} {'overflow':>8} {'nonfin':>6}")
        rows = [head]
        for s in self.layers:
            rows.append(
                f"{s.layer:>5} {s.tokens:>8} {s.entropy_mean:>7.3f} {s.entropy_normalized:>6.3f} "
                f"{s.average_k:>6.3f} {s.load_cv:>6.3f} {s.max_over_mean:>8.3f} {s.gini:>5.3f} "
                f"{s.dead_fraction:>5.2f} {s.effective_experts:>6.2f} {s.mutual_information:>6.3f} "
                f"{s.overflow_rate:>8.4f} {s.nonfinite_tokens:>6}"
            )
        return "\n".join(rows)

"""What a dedup run reports: per model, and for the store."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class ModelReport:
    """What dedup did to one model."""

    model: str
    examined: int = 0  # distinct blocks looked at
    substituted: int = 0  # replaced by a shared block outright
    residuals: int = 0  # replaced by a shared block plus a residual
    factors: int = 0  # tensors given whole-tensor low-rank factors (their blocks substituted)
    undone: int = 0  # replacements rolled back by the accuracy guard
    bytes_saved: int = 0  # block bytes freed, less residual and factor bytes written
    residual_bytes: int = 0
    factor_bytes: int = 0  # <store>_factors bytes written (writes.factor_bytes: u + v)
    score_before: float = math.nan
    score_after: float = math.nan
    validations: int = 0
    stopped: bool = False  # the budget was hit with on_exceed="stop"
    search_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def replaced(self) -> int:
        return self.substituted + self.residuals

    @property
    def drop(self) -> float:
        return self.score_before - self.score_after


@dataclass
class DedupReport:
    """The report of one Store.dedup run: per model, and the store's bytes before/after."""

    models: list[ModelReport] = field(default_factory=list)
    logical_bytes: int = 0
    physical_bytes_before: int = 0
    physical_bytes_after: int = 0
    seconds: float = 0.0

    def __getitem__(self, model: str) -> ModelReport:
        for r in self.models:
            if r.model == model:
                return r
        raise KeyError(model)

    @property
    def ratio(self) -> float:
        """Logical bytes (models stored separately) over physical bytes after the run."""
        return (
            self.logical_bytes / self.physical_bytes_after
            if self.physical_bytes_after
            else math.nan
        )

    def __str__(self) -> str:
        lines = [
            f"{'model':<16} {'examined':>8} {'subst':>6} {'resid':>6} {'factors':>7} {'undone':>6} "
            f"{'saved MiB':>9} {'before':>7} {'after':>7}"
        ]
        for r in self.models:
            lines.append(
                f"{r.model:<16} {r.examined:>8} {r.substituted:>6} {r.residuals:>6} "
                f"{r.factors:>7} {r.undone:>6} {r.bytes_saved / 2**20:>9.2f} {r.score_before:>7.4f} "
                f"{r.score_after:>7.4f}"
            )
        lines.append(
            f"physical {self.physical_bytes_before / 2**20:.2f} -> "
            f"{self.physical_bytes_after / 2**20:.2f} MiB of {self.logical_bytes / 2**20:.2f}"
            f" logical ({self.ratio:.2f}x), {self.seconds:.1f} s"
        )
        return "\n".join(lines)

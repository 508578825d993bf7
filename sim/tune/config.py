"""The tuning file: a base scenario, the autoscaler parameters to search, the objective and its constraints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.outpaths import FolderName
from sim.sweep.config import RandomParameter

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Constraint(BaseModel):
    """A summary figure (dotted path) that must stay at or above ``min`` and/or at or below ``max``."""

    model_config = _FROZEN
    metric: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> Constraint:
        if self.min is None and self.max is None:
            raise ValueError(f"constraint on {self.metric}: give min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"max: {self.max:g} is below min {self.min:g}; no trial could meet the constraint on "
                             f"{self.metric}")
        return self

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the bounds (0 inside; NaN counts as infinitely far)."""
        if value != value:  # NaN: the run did not reach the figure
            return float("inf")
        below = (self.min - value) if self.min is not None else 0.0
        above = (value - self.max) if self.max is not None else 0.0
        return max(0.0, below, above)


class Objective(BaseModel):
    """Minimise ``minimize`` (a dotted summary path, e.g. ``cost.usd_total``) subject to ``constraints``."""

    model_config = _FROZEN
    minimize: str = Field(default="cost.usd_total", min_length=1)
    constraints: tuple[Constraint, ...] = ()


class TuneConfig(BaseModel):
    """A tuning study: ``trials`` policies drawn from ``search`` (dotted keys of ``scenario``, e.g.
    ``pools.l4.autoscale.metrics.0.target``), each simulated ``replications`` times (the same seeds for every trial,
    so trials differ only by their policy), judged by the mean of each figure over the replications."""

    model_config = _FROZEN
    name: FolderName = "tune"
    scenario: str
    set: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, RandomParameter] = Field(min_length=1)
    objective: Objective = Objective()
    trials: int = Field(default=30, gt=0, le=100_000)
    replications: int = Field(default=1, ge=1, le=1000)
    seed: int = Field(default=0, ge=0)
    sampler: Literal["auto", "tpe", "sobol"] = Field(default="auto", description="tpe: Optuna's TPE (the tune "
                                                     "extra); sobol: a scrambled Sobol sequence (scipy); auto: TPE "
                                                     "when Optuna is installed")

"""The planning file: the workload and SLO (from a base scenario), the GPU choices, and the target."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sim.outpaths import FolderName

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class PlanConfig(BaseModel):
    """Find the cheapest mix of ``candidates`` (pool settings: ``gpu``, ``precision``, ``tensor_parallel``, any other
    pool field) serving ``model`` for the workload, SLO and router of ``scenario`` (its own pools are replaced), so
    that at least ``target_attainment`` of the requests meet the SLO in simulation. A candidate starts from the
    scenario's first pool (less its replicas, price, autoscale, spot, failures, sharing and role): what it does not
    set (precision, engine, perf, ...) it takes from there."""

    model_config = _FROZEN
    name: FolderName = "plan"
    scenario: str
    set: dict[str, Any] = Field(default_factory=dict, description="overrides of the base scenario")
    model: str | None = Field(default=None, description="catalog key; default: the model of the scenario's first "
                              "pool")
    candidates: tuple[dict[str, Any], ...] = Field(min_length=1)
    target_attainment: float = Field(default=0.99, gt=0, le=1)
    headroom: float = Field(default=0.8, gt=0, le=1, description="the first cut loads each replica to this "
                            "fraction of its analytic capacity (queueing needs slack)")
    max_replicas: int = Field(default=64, gt=0, le=10_000, description="per candidate")
    max_iterations: int = Field(default=12, ge=0, le=200, description="simulations to adjust the first cut")

"""The experiment file: a base scenario, the parameters that vary over dotted keys, replications and metrics.

Frozen pydantic models, validated in one place (:func:`sim.sweep.load_experiment`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.outpaths import FolderName

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

#: Summary figures kept per run when an experiment names none (dotted paths into the run's summary).
DEFAULT_METRICS = (
    "ttft_s.p50", "ttft_s.p99", "tpot_s.p50", "tpot_s.p99", "e2e_s.p99", "slo.attainment",
    "throughput.output_tokens_per_s", "cost.usd_per_hour", "cost.usd_per_million_output_tokens",
)


class RandomParameter(BaseModel):
    """One dimension of a random search: exactly one of ``uniform``, ``loguniform`` (each ``[low, high]``),
    ``integer`` (``[low, high]``, both included) or ``choice`` (a list)."""

    model_config = _FROZEN
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    integer: tuple[int, int] | None = None
    choice: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _one(self) -> RandomParameter:
        given = [k for k in ("uniform", "loguniform", "integer", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of uniform, loguniform, integer, choice (got {given or 'none'})")
        for key in ("uniform", "loguniform", "integer"):
            bounds = getattr(self, key)
            if bounds is not None and not bounds[0] <= bounds[1]:
                raise ValueError(f"{key}: low {bounds[0]} is above high {bounds[1]}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be positive")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        return self


class RandomSpace(BaseModel):
    """``samples`` points drawn from ``parameters`` (one stream spawned from the experiment's seed)."""

    model_config = _FROZEN
    samples: int = Field(gt=0, le=100_000)
    parameters: dict[str, RandomParameter] = Field(min_length=1)


class Variant(BaseModel):
    """A named list of overrides (``set``: dotted key -> value)."""

    model_config = _FROZEN
    name: str = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)


class Parameters(BaseModel):
    """What varies. The arms are every combination of: each variant (or none), each point of the ``grid``
    (the product of its lists), each row of ``zip`` (its lists, of equal length, taken together) and each
    ``random`` sample."""

    model_config = _FROZEN
    grid: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    zip: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    random: RandomSpace | None = None
    variants: tuple[Variant, ...] = ()

    @model_validator(mode="after")
    def _shapes(self) -> Parameters:
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{key}: needs at least one value")
        lengths = {key: len(values) for key, values in self.zip.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"zip: lists of different lengths {lengths}; zip takes the i-th value of each")
        if 0 in lengths.values():
            raise ValueError("zip: needs at least one value per list")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants: names must be unique, got {names}")
        keys = [*self.grid, *self.zip, *(self.random.parameters if self.random else ())]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"keys varied in more than one of grid, zip, random: {twice}")
        return self


class Experiment(BaseModel):
    """A sweep: ``scenario`` (a scenario file, relative to the experiment file) with ``set`` applied to every arm,
    the arms of ``parameters``, ``replications`` runs of each (seeds spawned from ``seed``: replication ``r`` has
    the same seed in every arm, so arms see the same arrivals and lengths and differ only by what they vary),
    and the ``metrics`` kept from each run's summary (dotted paths, e.g. ``ttft_s.p99``,
    ``pools.h100.slo.attainment``)."""

    model_config = _FROZEN
    name: FolderName = "experiment"
    scenario: str
    set: dict[str, Any] = Field(default_factory=dict)
    parameters: Parameters = Parameters()
    replications: int = Field(default=1, ge=1, le=10_000)
    seed: int = Field(default=0, ge=0)
    metrics: tuple[str, ...] = Field(default=DEFAULT_METRICS, min_length=1)

    @model_validator(mode="after")
    def _unique_metrics(self) -> Experiment:
        twice = sorted({m for m in self.metrics if self.metrics.count(m) > 1})
        if twice:
            raise ValueError(f"metrics: {twice} listed more than once")
        return self

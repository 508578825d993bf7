"""What a run returns: DataFrames and a summary, all in memory (the CLI writes them to disk)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from sim.config import Scenario
from sim.errors import FleetsimError
from sim.metrics.summary import pool_table


def _stamp(part: Path) -> tuple[int, int] | None:
    """A part file's size and modification time (ns), or None if it is gone: what tells it from a later run's."""
    try:
        st = part.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# eq=False: the frames make field-wise equality ambiguous (and unhashable); two results are the same object or not.
@dataclass(frozen=True, eq=False)
class Results:
    """Outputs of one simulation.

    Attributes
    ----------
    scenario
        The resolved scenario that ran, with the seed it ran when that was an integer (a ``SeedSequence``, as a
        sweep's replications use, is recorded in ``seed`` and ``summary["seed"]`` only).
    seed
        The seed used (an int, or the entropy and spawn key of a ``SeedSequence``).
    requests
        One row per request that arrived, in arrival order (see :func:`sim.metrics.records.requests_frame`).
        For a run that spilled its records to disk (more than ``run.spill_after_requests``), reading this
        attribute loads them from ``requests_parts``.
    timeseries
        Pool state change points: ``time_s, pool, running, waiting, kv_used_blocks, busy_replicas, kv_total_blocks,
        kv_utilization``.
    replicas
        One row per replica lifetime: pool, GPU, GPUs, start/end, busy seconds, price and power.
    cost_by_hour
        USD and GPU-hours per pool per clock hour.
    summary
        Headline figures (the content of ``summary.json``).
    events
        The per-request event log ``(time_s, request_id, event, value)`` when ``run.trace_events`` is on.
    requests_parts, timeseries_parts
        The Parquet part files of spilled records (request rows in completion order), else empty. Unless the run
        was given a spill folder (``spill_dir``, ``run.spill_dir`` or the CLI's ``--out``), they are in a temporary
        folder removed once these results (and every deep copy or ``dataclasses.replace`` of them; not a pickled
        copy) are gone, or when Python exits: copy them (or use :func:`sim.cli.write_results`) to keep them.
    gpus
        One row per shared physical GPU (vGPU, MIG, time-slicing, MPS): its tenants, busy fraction, switch time
        and hourly cost including any vGPU licence (see :func:`sim.metrics.usage.usage_frames`); empty when no
        pool shares GPUs.
    """

    scenario: Scenario
    seed: object
    requests_in_memory: pd.DataFrame | None
    timeseries_in_memory: pd.DataFrame | None
    replicas: pd.DataFrame
    cost_by_hour: pd.DataFrame
    summary: dict
    events: list | None = None
    requests_parts: tuple[Path, ...] = ()
    timeseries_parts: tuple[Path, ...] = ()
    gpus: pd.DataFrame | None = None
    nodes: pd.DataFrame | None = None
    lifecycle: pd.DataFrame | None = None
    scaling: pd.DataFrame | None = None
    monitoring: pd.DataFrame | None = None  # with a scenario's monitoring block (sim/metrics/monitoring.py)
    alerts: pd.DataFrame | None = None
    maintenance: pd.DataFrame | None = None  # with a scenario's maintenance block: one row per window and host
    # The temporary folders of spilled parts (sim.metrics.store.TempFolder), held so that they last as long as these
    # results (and their copies) and are removed after.
    spill_folders: tuple = ()
    # Each spilled part's (size, mtime ns) as the run left it: a later run spilling into the same folder replaces
    # the parts, and reading them back then must fail, not return the other run's rows.
    part_stamps: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.part_stamps:
            stamps = {p: _stamp(p) for p in (*self.requests_parts, *self.timeseries_parts)}
            object.__setattr__(self, "part_stamps", stamps)

    def __deepcopy__(self, memo: dict) -> Results:
        # The temporary folders are shared, not copied: a copy keeps the spilled parts alive as the original does.
        shared = ("spill_folders", "requests_parts", "timeseries_parts", "part_stamps")
        return Results(**{f.name: getattr(self, f.name) if f.name in shared else copy.deepcopy(getattr(self, f.name),
                                                                                              memo)
                          for f in fields(self)})

    def parts(self, name: str) -> tuple[Path, ...]:
        """The spilled part files of ``requests`` or ``timeseries``, checked to be the ones this run wrote."""
        parts = self.requests_parts if name == "requests" else self.timeseries_parts
        for part in parts:
            now = _stamp(part)
            if now is None:
                raise FleetsimError(
                    f"{part}: the spilled {name} of this run are gone: they were in a temporary folder, removed with "
                    "the results that made it (a pickled copy, or one from another process, does not keep it); give "
                    "simulate a spill_dir, or write them with sim.cli.write_results, to keep them")
            if now != self.part_stamps.get(part):
                raise FleetsimError(
                    f"{part}: the spilled {name} of this run were replaced, by a later run spilling into the same "
                    "folder; give each run its own spill_dir")
        return parts

    @property
    def requests(self) -> pd.DataFrame:
        """Every request's record (read back from ``requests_parts`` if the run spilled them)."""
        if self.requests_in_memory is not None:
            return self.requests_in_memory
        frame = pd.concat([pd.read_parquet(p) for p in self.parts("requests")], ignore_index=True)
        return frame.sort_values("request_id", kind="stable", ignore_index=True)

    @property
    def timeseries(self) -> pd.DataFrame:
        """Pool change points (read back from ``timeseries_parts`` if the run spilled them)."""
        if self.timeseries_in_memory is not None:
            return self.timeseries_in_memory
        return pd.concat([pd.read_parquet(p) for p in self.parts("timeseries")], ignore_index=True)

    def table(self) -> pd.DataFrame:
        """Per-pool headline figures (latency percentiles, throughput, SLO attainment, USD per hour)."""
        return pool_table(self.summary)


def read_table(folder: str | Path, name: str) -> pd.DataFrame:
    """The table ``name`` of a results folder written by ``fleetsim run --out``: ``NAME.parquet``, or the ``NAME/``
    folder of Parquet parts a spilled run writes (its request rows put back in arrival order)."""
    path = Path(folder) / f"{name}.parquet"
    frame = pd.read_parquet(path if path.exists() else Path(folder) / name)
    if name == "requests" and not path.exists():  # parts hold the rows in completion order
        frame = frame.sort_values("request_id", kind="stable", ignore_index=True)
    return frame

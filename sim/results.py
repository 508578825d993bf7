"""What a run returns: DataFrames and a summary, all in memory (the CLI writes them to disk)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sim.config import Scenario
from sim.metrics.summary import pool_table


@dataclass(frozen=True)
class Results:
    """Outputs of one simulation.

    Attributes
    ----------
    scenario
        The resolved scenario that ran.
    seed
        The seed used (an int, or the entropy and spawn key of a ``SeedSequence``).
    requests
        One row per request that arrived (see :func:`sim.metrics.records.requests_frame`).
    timeseries
        Pool state change points: ``time_s, pool, running, waiting, kv_used_blocks, busy_replicas, kv_utilization``.
    replicas
        One row per replica lifetime: pool, GPU, GPUs, start/end, busy seconds, price and power.
    cost_by_hour
        USD and GPU-hours per pool per clock hour.
    summary
        Headline figures (the content of ``summary.json``).
    events
        The per-request event log ``(time_s, request_id, event, value)`` when ``run.trace_events`` is on.
    """

    scenario: Scenario
    seed: object
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    replicas: pd.DataFrame
    cost_by_hour: pd.DataFrame
    summary: dict
    events: list | None = None

    def table(self) -> pd.DataFrame:
        """Per-pool headline figures (latency percentiles, throughput, SLO attainment, USD per hour)."""
        return pool_table(self.summary)

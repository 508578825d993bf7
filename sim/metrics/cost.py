"""Cost and energy, computed after the run from the replicas' lifetimes.

Cost: ``GPUs x seconds alive x (usd_per_gpu_hour + licence) / 3600``, split by clock hour; ``gpus`` is a
replica's share of a physical GPU when replicas share one (vGPU, MIG, time-slicing, MPS), so a shared GPU's cost
is split across its tenants. Energy uses a two-level power model per GPU: ``tdp_w`` while the GPU executes work,
``idle_w`` otherwise (an upper bound on busy power: real kernels rarely draw full TDP). The busy time is
``gpu_busy_s``: the replica's own steps on whole GPUs and MIG instances, the physical GPU's busy time (all
tenants' work and switches) on a time-shared GPU.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

INTERVAL_COLUMNS = ["pool", "gpu_type", "replica_id", "gpus", "start_s", "end_s", "busy_s", "usd_per_gpu_hour",
                    "idle_w", "busy_w", "physical_gpu", "gpu_time_s", "gpu_busy_s", "licence_usd_per_gpu_hour"]


HOURLY_COLUMNS = ["hour", "pool", "gpu_type", "gpu_hours", "usd", "licence_usd"]


def cost_by_hour(intervals: pd.DataFrame) -> pd.DataFrame:
    """USD and GPU-hours per pool per clock hour (hour 0 is ``[0 s, 3600 s)``), sorted by hour, pool and GPU.

    Parameters
    ----------
    intervals
        One row per replica lifetime with columns ``pool, gpu_type, gpus, start_s, end_s, usd_per_gpu_hour``
        and optionally ``licence_usd_per_gpu_hour`` (vGPU: NVIDIA AI Enterprise per physical GPU). ``usd``
        includes the licence; ``licence_usd`` is its part. Sums are exactly rounded (``math.fsum``), so they do
        not depend on the order of the intervals.
    """
    parts: dict[tuple, tuple[list[float], list[float], list[float]]] = {}
    licence = intervals.get("licence_usd_per_gpu_hour", pd.Series(0.0, index=intervals.index)).to_numpy(dtype=float)
    for rec, lic in zip(intervals.itertuples(index=False), licence, strict=True):
        if rec.end_s <= rec.start_s:
            continue
        first, last = int(rec.start_s // 3600), math.ceil(rec.end_s / 3600)
        for hour in range(first, max(last, first + 1)):
            overlap = min(rec.end_s, (hour + 1) * 3600) - max(rec.start_s, hour * 3600)
            if overlap > 0:
                gpu_hours = rec.gpus * overlap / 3600
                acc = parts.setdefault((hour, rec.pool, rec.gpu_type), ([], [], []))
                acc[0].append(gpu_hours)
                acc[1].append(gpu_hours * (rec.usd_per_gpu_hour + lic))
                acc[2].append(gpu_hours * lic)
    if not parts:
        return pd.DataFrame([], columns=HOURLY_COLUMNS)
    keys = sorted(parts)
    sums = [[math.fsum(parts[k][i]) for k in keys] for i in range(3)]
    return pd.DataFrame({"hour": np.array([k[0] for k in keys], dtype=np.int64), "pool": [k[1] for k in keys],
                         "gpu_type": [k[2] for k in keys], "gpu_hours": sums[0], "usd": sums[1],
                         "licence_usd": sums[2]})


def energy_kwh(intervals: pd.DataFrame) -> float:
    """Energy of all GPUs over their lifetimes under the two-level power model."""
    alive = (intervals["end_s"] - intervals["start_s"]).clip(lower=0).to_numpy(dtype=float)
    busy = intervals["gpu_busy_s"] if "gpu_busy_s" in intervals else intervals["busy_s"]
    busy = np.minimum(busy.to_numpy(dtype=float), alive)
    joules = intervals["gpus"].to_numpy() * (
        intervals["busy_w"].to_numpy() * busy + intervals["idle_w"].to_numpy() * (alive - busy)
    )
    return float(joules.sum() / 3.6e6)

"""What the GPUs were paid for, against what they did: utilisation and its price (issue #9, "utilisation reality").

Every billed GPU-hour is either busy (a step running on it) or not. The not-busy time is priced by why: a serving
replica (ready or draining) with no step to run (over-provisioning and idle gaps), cold starts, and billed time with no
replica (free GPUs of a node, release delays, billing rounding). So "cost per request at 40% utilisation" is a result
of the run: ``usd_per_request`` at ``utilisation``, beside what the requests would have cost at full use.
"""

from __future__ import annotations

import pandas as pd


def utilisation_summary(replicas: pd.DataFrame, hourly: pd.DataFrame, finished: int) -> dict:
    """The ``utilisation`` block of a run's summary.

    Parameters
    ----------
    replicas
        The replicas table (``gpus``, ``gpu_busy_s``: GPU time its steps used, ``usd_per_gpu_hour``, ``pool``).
    hourly
        The cost by hour table (``pool``, ``gpu_hours``, ``usd``, and GPU-hours by state).
    finished
        Requests finished.

    Returns
    -------
    dict
        ``billed_gpu_hours``, ``busy_gpu_hours``, ``utilisation`` (busy over billed), ``usd`` split into ``busy``,
        ``serving_not_busy``, ``cold_start``, ``no_replica`` (each pool's hours at its average billed rate, licences
        included), ``usd_per_request`` and ``usd_per_request_if_fully_used`` (the busy part
        alone).
    """
    if not len(hourly):
        return {"billed_gpu_hours": 0.0, "busy_gpu_hours": 0.0, "utilisation": None, "usd": {},
                "usd_per_request": None, "usd_per_request_if_fully_used": None}
    busy_h = (replicas["gpu_busy_s"] * replicas["gpus"] / 3600).groupby(replicas["pool"].astype(str)).sum()
    split = dict.fromkeys(("busy", "serving_not_busy", "cold_start", "no_replica"), 0.0)
    billed = busy = 0.0
    for pool, rows in hourly.groupby(hourly["pool"].astype(str)):
        hours = float(rows["gpu_hours"].sum())
        if hours <= 0:
            continue
        rate = float(rows["usd"].sum()) / hours  # licences are in usd
        b = float(busy_h.get(pool, 0.0))
        billed += hours
        busy += b
        split["busy"] += b * rate
        # Steps run while a replica is ready or draining: both hold the busy time.
        serving = float(rows["ready_gpu_hours"].sum() + rows["draining_gpu_hours"].sum())
        split["serving_not_busy"] += (serving - b) * rate
        split["cold_start"] += float(rows["cold_start_gpu_hours"].sum()) * rate
        split["no_replica"] += float(rows["idle_gpu_hours"].sum()) * rate
    total = float(hourly["usd"].sum())
    return {
        "billed_gpu_hours": billed,
        "busy_gpu_hours": busy,
        "utilisation": busy / billed if billed else None,
        "usd": split,
        "usd_per_request": total / finished if finished else None,
        "usd_per_request_if_fully_used": split["busy"] / finished if finished else None,
    }

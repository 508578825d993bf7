"""Who used which GPU: one row per replica lifetime and one per shared physical GPU, taken at the end of a run."""

from __future__ import annotations

import pandas as pd

from sim.cluster.pool import TERMINAL
from sim.metrics.cost import INTERVAL_COLUMNS

GPU_COLUMNS = ["gpu_id", "gpu_type", "mode", "scheduler", "tenants", "pools", "busy_s", "switch_s",
               "busy_fraction", "usd_per_hour", "licence_usd_per_hour"]


def _scheduler(sharing) -> str:
    return {"vgpu": getattr(sharing, "scheduler", ""), "timeslice": "best_effort", "mps": "concurrent",
            "mig": "isolated"}[sharing.mode]


def usage_frames(fleet, end_s: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(replicas, gpus)`` of a finished run (``fleet``: a :class:`~sim.cluster.build.Fleet`) at ``end_s``.

    ``replicas``: :data:`~sim.metrics.cost.INTERVAL_COLUMNS`; ``gpu_time_s`` is the physical GPU time the replica
    used (its steps' time on the GPU alone; on MPS, weighted by its SM share) and ``gpu_busy_s`` the busy time
    of what it pays for (see :mod:`sim.metrics.cost`). ``gpus``: one row per shared physical GPU with its busy
    fraction, switch time and hourly cost.
    """
    plans = fleet.plans
    placement = fleet.deployment.placement()
    usage = {gid: share.usage() for gid, share in fleet.shares.items()}
    busy_of = {gid: sum(w * g for w, g in zip(work, fleet.shares[gid].gpu_weight, strict=True)) + switch
               for gid, (work, switch) in usage.items()}
    rows = []
    for name, pool in fleet.pools.items():
        plan = plans[name]
        sharing = plan.config.sharing
        licence = sharing.license_usd_per_gpu_hour if sharing is not None and sharing.mode == "vgpu" else 0.0
        for i, member in enumerate(pool.members):
            r = member.replica
            start = member.log[0][0]
            end = member.log[-1][0] if member.state in TERMINAL else end_s
            busy = r.busy_until(end)
            gpu, position = placement.get((name, i), (None, 0))
            if gpu is None:
                tp = plan.config.gpus_per_replica
                gpus, gid, gpu_time, gpu_busy = tp, "", busy * tp, busy
            elif gpu.gpu_id in usage:
                work, _ = usage[gpu.gpu_id]
                gpus, gid = gpu.share(position), gpu.gpu_id
                gpu_time, gpu_busy = work[position] * fleet.shares[gid].gpu_weight[position], busy_of[gid]
            else:  # an isolated MIG instance: its own steps, on its part of the GPU
                gpus, gid = gpu.share(position), gpu.gpu_id
                gpu_time, gpu_busy = busy * gpus, busy
            rows.append((name, plan.gpu.key, r.replica_id, gpus, start, end, busy, plan.usd_per_gpu_hour,
                         plan.gpu.idle_w, plan.gpu.tdp_w, gid, gpu_time, gpu_busy, licence))
    replicas = pd.DataFrame(rows, columns=INTERVAL_COLUMNS)
    gpu_rows = []
    for gpu in fleet.deployment.gpus:
        mine = replicas[replicas["physical_gpu"] == gpu.gpu_id]
        sharing = plans[gpu.tenants[0].pool].config.sharing
        if gpu.gpu_id in usage:
            busy, switch = busy_of[gpu.gpu_id], usage[gpu.gpu_id][1]
        else:
            busy, switch = float(mine["gpu_time_s"].sum()), 0.0
        licence = float((mine["gpus"] * mine["licence_usd_per_gpu_hour"]).sum())
        gpu_rows.append((gpu.gpu_id, gpu.gpu.key, gpu.mode, _scheduler(sharing), len(gpu.tenants),
                         ",".join(sorted({t.pool for t in gpu.tenants})), busy, switch,
                         busy / end_s if end_s > 0 else None,
                         float((mine["gpus"] * mine["usd_per_gpu_hour"]).sum()) + licence, licence))
    return replicas, pd.DataFrame(gpu_rows, columns=GPU_COLUMNS)


def usage_summary(replicas: pd.DataFrame, gpus: pd.DataFrame, duration_s: float) -> tuple[dict, dict]:
    """``(per pool, shared GPUs)`` figures for the summary: each pool's GPUs paid for (shares of shared GPUs
    count as fractions) and GPU-time share (GPU time used / run length); the shared GPUs' busy fractions and
    licence cost."""
    pools = {}
    for pool, rows in replicas.groupby("pool", sort=False):
        pools[pool] = {"gpus_paid": float(rows["gpus"].sum()),
                       "gpu_time_share": float(rows["gpu_time_s"].sum() / duration_s) if duration_s > 0 else None}
    shared = None
    if len(gpus):
        hours = duration_s / 3600
        shared = {"physical_gpus": len(gpus),
                  "busy_fraction_mean": float(gpus["busy_fraction"].mean()) if duration_s > 0 else None,
                  "busy_fraction_max": float(gpus["busy_fraction"].max()) if duration_s > 0 else None,
                  "switch_s": float(gpus["switch_s"].sum()),
                  "licence_usd_total": float(gpus["licence_usd_per_hour"].sum() * hours)}
    return pools, shared

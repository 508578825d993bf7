"""Replica and node lifetimes after a run: the lifecycle event log, billed node time, and GPU-hours by state.

Cost of a pool that does not share GPUs is node time: ``gpus_per_node x billed seconds x price``, where billed
seconds run from the start of provisioning to the release, rounded up to the billing granularity and at least the
minimum (reference PR-1). The GPU-hours are split by what the GPUs were doing: ``ready`` (a ready replica on
them), ``cold_start`` (a replica starting: node, pull, load, warmup, probe), ``draining``, and ``idle`` (billed
with no replica: a node's free GPUs, the wait before an empty node is released, billing rounding).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.cluster.pool import STARTING, TERMINAL
from sim.metrics.cost import cost_by_hour

LIFECYCLE_COLUMNS = ["time_s", "pool", "replica_id", "node_id", "state"]
NODE_COLUMNS = ["pool", "node_id", "gpu_type", "gpus", "requested_s", "start_s", "end_s", "ended_by",
                "failed_attempts", "billed_s", "usd_per_gpu_hour"]
STATE_CLASSES = ("ready", "cold_start", "draining")


def billed_s(alive_s: float, granularity_s: float, minimum_s: float) -> float:
    """Seconds billed for ``alive_s`` of node time: rounded up to ``granularity_s`` (0: exact), at least
    ``minimum_s``."""
    if granularity_s > 0:
        alive_s = math.ceil(alive_s / granularity_s - 1e-9) * granularity_s
    return max(alive_s, minimum_s)


def state_class(state: str) -> str | None:
    if state in STARTING:
        return "cold_start"
    return state if state in ("ready", "draining") else None


def lifecycle_frame(pools: dict) -> pd.DataFrame:
    """Every replica's state changes: ``time_s, pool, replica_id, node_id, state`` (``fleet.pools``)."""
    rows = [(t, name, m.replica.replica_id, m.node.node_id, state)
            for name, pool in pools.items() for m in pool.members for t, state in m.log]
    frame = pd.DataFrame(rows, columns=LIFECYCLE_COLUMNS)
    return frame.sort_values(["time_s", "replica_id"], kind="stable", ignore_index=True)


def state_counts(lifecycle: pd.DataFrame) -> pd.DataFrame:
    """Replicas per pool by lifecycle state over time (one row per change point; columns are the states)."""
    if lifecycle.empty:
        return pd.DataFrame(columns=["time_s", "pool"])
    events = lifecycle.sort_values(["replica_id", "time_s"], kind="stable")
    prev = events.groupby("replica_id")["state"].shift()
    plus = events.assign(delta=1)
    minus = events[prev.notna()].assign(state=prev[prev.notna()], delta=-1)
    changes = pd.concat([plus, minus]).pivot_table(index=["time_s", "pool"], columns="state", values="delta",
                                                  aggfunc="sum", fill_value=0)
    counts = changes.groupby(level="pool").cumsum().reset_index()
    return counts.drop(columns=[c for c in TERMINAL if c in counts]).sort_values("time_s", kind="stable",
                                                                                 ignore_index=True)


def nodes_frame(fleet, end_s: float) -> pd.DataFrame:
    """One row per node of the pools that do not share GPUs, with its billed seconds."""
    rows = []
    for name, pool in fleet.pools.items():
        plan = fleet.plans[name]
        if plan.shared:
            continue
        billing = plan.config.billing
        for node in pool.nodes:
            end = node.end_s if node.end_s is not None else end_s
            start = min(node.start_s, end)  # a node still failing to provision at the end was never started
            rows.append((name, node.node_id, plan.gpu.key, node.gpus, node.requested_s, start, end, node.ended_by,
                         node.failed_attempts, billed_s(end - start, billing.granularity_s, billing.minimum_s)
                         if end > start else 0.0, plan.usd_per_gpu_hour))
    return pd.DataFrame(rows, columns=NODE_COLUMNS)


def _split_by_hour(start: float, end: float):
    first, last = int(start // 3600), math.ceil(end / 3600)
    for hour in range(first, max(last, first + 1)):
        overlap = min(end, (hour + 1) * 3600) - max(start, hour * 3600)
        if overlap > 0:
            yield hour, overlap


def state_gpu_hours(fleet, end_s: float, gpus_of: dict[int, float]) -> pd.DataFrame:
    """GPU-hours per clock hour and pool by state class (``ready``, ``cold_start``, ``draining``); ``gpus_of``:
    each replica's GPUs (its share on a shared GPU). Sorted by hour and pool; exactly rounded sums."""
    parts: dict[tuple[int, str], dict[str, list[float]]] = {}
    for name, pool in fleet.pools.items():
        for m in pool.members:
            tp = gpus_of[m.replica.replica_id]
            for (t0, state), (t1, _) in zip(m.log, [*m.log[1:], (end_s, "")], strict=True):
                cls = state_class(state)
                if state == "node":
                    t0 = max(t0, m.node.start_s)  # waiting out a stock-out bills no node: not cold-start time
                if cls is None or min(t1, end_s) <= t0:
                    continue
                for hour, overlap in _split_by_hour(t0, min(t1, end_s)):
                    parts.setdefault((hour, name), {}).setdefault(cls, []).append(tp * overlap / 3600)
    keys = sorted(parts)
    return pd.DataFrame({"hour": np.array([k[0] for k in keys], dtype=np.int64), "pool": [k[1] for k in keys],
                         **{f"{c}_gpu_hours": np.array([math.fsum(parts[k].get(c, ())) for k in keys], dtype=float)
                            for c in STATE_CLASSES}})


def hourly_cost(replicas: pd.DataFrame, nodes: pd.DataFrame, states: pd.DataFrame) -> pd.DataFrame:
    """USD and GPU-hours per clock hour and pool: billed node time for pools with their own GPUs, each replica's
    share for pools on shared GPUs; with the GPU-hours split into ``ready``, ``cold_start``, ``draining`` and
    ``idle`` (see the module docstring). ``states``: :func:`state_gpu_hours`."""
    billed = pd.DataFrame({
        "pool": nodes["pool"], "gpu_type": nodes["gpu_type"], "gpus": nodes["gpus"], "start_s": nodes["start_s"],
        "end_s": nodes["start_s"] + nodes["billed_s"], "usd_per_gpu_hour": nodes["usd_per_gpu_hour"],
        "licence_usd_per_gpu_hour": 0.0})
    shared = replicas[replicas["physical_gpu"] != ""]
    hourly = cost_by_hour(pd.concat([billed, shared[billed.columns]], ignore_index=True) if len(shared) else billed)
    columns = [f"{c}_gpu_hours" for c in STATE_CLASSES]
    if hourly.empty:
        return hourly.assign(**{c: [] for c in (*columns, "idle_gpu_hours")})
    by_key = {(h, p): i for i, (h, p) in enumerate(zip(states["hour"].tolist(), states["pool"].tolist(), strict=True))}
    rows = [by_key.get(key) for key in zip(hourly["hour"].tolist(), hourly["pool"].tolist(), strict=True)]
    for c in columns:
        values = states[c].tolist()
        hourly[c] = [0.0 if i is None else values[i] for i in rows]
    total = hourly["gpu_hours"].tolist()
    hourly["idle_gpu_hours"] = [max(t - ((r + s) + d), 0.0) for t, r, s, d in zip(
        total, *(hourly[c].tolist() for c in columns), strict=True)]
    return hourly


def idle_node_kwh(replicas: pd.DataFrame, nodes: pd.DataFrame) -> float:
    """Energy of node GPUs while no replica held them (at idle power)."""
    if nodes.empty:
        return 0.0
    own = replicas[replicas["physical_gpu"] == ""]
    replica_gpu_s: dict[str, list[float]] = {}
    idle_w: dict[str, float] = {}
    for pool, gpus, start, end, watts in zip(own["pool"].tolist(), own["gpus"].tolist(), own["start_s"].tolist(),
                                             own["end_s"].tolist(), own["idle_w"].tolist(), strict=True):
        replica_gpu_s.setdefault(pool, []).append(gpus * (end - start))
        idle_w.setdefault(pool, watts)
    node_gpu_s: dict[str, list[float]] = {}
    for pool, gpus, start, end in zip(nodes["pool"].tolist(), nodes["gpus"].tolist(), nodes["start_s"].tolist(),
                                      nodes["end_s"].tolist(), strict=True):
        node_gpu_s.setdefault(pool, []).append(gpus * (end - start))
    spare_j = [max(math.fsum(s) - math.fsum(replica_gpu_s.get(pool, ())), 0.0) * idle_w.get(pool, 0.0)
               for pool, s in sorted(node_gpu_s.items())]
    return math.fsum(spare_j) / 3.6e6

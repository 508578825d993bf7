"""Invariants checked after every run (issue #10), cheaply, over the run's tables; on by default
(``run.check_invariants``; benchmarks may turn it off). A violation is a bug in fleetsim, not in the input: the run
stops with an :class:`~sim.errors.InternalError` naming the invariant, the scenario and the seed to reproduce it.

Checked: every request that arrived is accounted for exactly once (finished, rejected or in flight); each request's
timestamps are in order (arrival <= first scheduling <= first token <= finish) and no latency is negative; a finished
request produced its output; every restart after a replica went away is counted alike by the request and by the
gateway, a request rejected for it was interrupted, and a restarted request queued at least the service it lost; no
replica is busy longer than it lived; a shared GPU is busy at most all the time;
billed GPU-hours are at least the GPU-hours replicas were ready. (KV blocks never over-allocated is asserted at
every allocation, in :mod:`sim.engine.state`.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.errors import InternalError

TOL_S = 1e-9


#: Reasons a request is rejected when its replica goes away under it (the pool's ``on_...: fail``).
FAULT_REASONS = ("spot_reclaimed", "gpu_failure", "drain_timeout")


def violations(requests: pd.DataFrame, summary: dict, replicas: pd.DataFrame, gpus: pd.DataFrame | None,
               hourly: pd.DataFrame, given_back: dict[str, int] | None = None) -> list[str]:
    """Every invariant the run breaks, as one line each (empty: none). ``given_back``: the gateway's count of
    requests handed back by replicas that went away (``restarted``, ``rejected``)."""
    out = []
    counts = summary["requests"]
    if counts["finished"] + counts["rejected"] + counts["in_flight"] != counts["arrived"]:
        out.append(f"conservation: {counts['arrived']} arrived but {counts['finished']} finished + "
                   f"{counts['rejected']} rejected + {counts['in_flight']} in flight")
    if len(requests) != counts["arrived"]:
        out.append(f"records: {len(requests)} rows for {counts['arrived']} arrivals")
    full = "request_id" in requests  # a spilled run keeps only the summary's columns in memory
    ids = requests["request_id"].to_numpy() if full else np.arange(len(requests))
    # The table is in request-id order: strictly increasing ids are distinct, checked without a sort.
    if full and not (ids[1:] > ids[:-1]).all() and len(np.unique(ids)) != len(ids):
        out.append(f"records: {len(ids) - len(np.unique(ids))} request ids appear twice")
    if full:
        arrival = requests["arrival_s"].to_numpy(float)
        queue, first, finish = (requests[c].to_numpy(float) for c in ("queue_s", "first_token_s", "finish_s"))
        scheduled = arrival + queue
        for name, earlier, later in (("scheduled before arrival", arrival, scheduled),
                                     ("first token before scheduling", scheduled, first),
                                     ("finish before first token", first, finish)):
            bad = ~np.isnan(later) & ~np.isnan(earlier) & (later < earlier - TOL_S)
            if bad.any():
                out.append(f"timestamps: {name} for request {int(ids[np.argmax(bad)])} ({int(bad.sum())} in all)")
    for column in ("queue_s", "ttft_s", "tpot_s", "e2e_s", "max_itl_s"):
        values = requests[column].to_numpy(float)
        if (values < -TOL_S).any():
            out.append(f"negative {column} for request {int(ids[np.argmax(values < -TOL_S)])}")
    restarts = int(requests["interruptions"].sum())
    if given_back is not None and restarts != given_back["restarted"] + given_back["rejected"]:
        out.append(f"retries: requests count {restarts} interruptions but replicas gave back "
                   f"{given_back['restarted']} to restart and {given_back['rejected']} to reject")
    # A restarted request's latency includes the service its lost attempts threw away.
    short = requests["queue_s"].to_numpy(float) < requests["lost_s"].to_numpy(float) - 1e-6
    if short.any():
        out.append(f"retries: request {int(ids[np.argmax(short)])} queued less than the work it lost")
    if full:
        faulted = requests["reject_reason"].isin(FAULT_REASONS).to_numpy()
        if (requests["interruptions"].to_numpy()[faulted] < 1).any():
            out.append("retries: a request rejected for losing its replica was never interrupted")
    done = (requests["status"] == "finished").to_numpy()
    if done.any() and np.isnan(requests["ttft_s"].to_numpy(float)[done]).any():
        out.append("a finished request has no first token")
    lived = (replicas["end_s"] - replicas["start_s"]).to_numpy(float)
    over = replicas["busy_s"].to_numpy(float) > lived + 1e-6
    if over.any():
        out.append(f"replica {int(replicas['replica_id'].to_numpy()[np.argmax(over)])} busy longer than it lived")
    if gpus is not None and len(gpus) and (gpus["busy_fraction"].to_numpy(float) > 1 + 1e-9).any():
        out.append("a shared GPU busy more than all the time")
    if len(hourly):
        billed, ready = float(hourly["gpu_hours"].sum()), float(hourly["ready_gpu_hours"].sum())
        if billed < ready - 1e-9:
            out.append(f"billed GPU-hours {billed:.6f} below ready GPU-hours {ready:.6f}")
    return out


def check(requests: pd.DataFrame, summary: dict, replicas: pd.DataFrame, gpus: pd.DataFrame | None,
          hourly: pd.DataFrame, scenario_name: str, seed, given_back: dict[str, int] | None = None) -> None:
    """Raise :class:`InternalError` on the first violations, naming the scenario and seed to reproduce them."""
    found = violations(requests, summary, replicas, gpus, hourly, given_back)
    if found:
        raise InternalError(f"internal error (a bug in fleetsim, please report it): {'; '.join(found[:3])}; "
                            f"reproduce with scenario {scenario_name!r}, seed {seed}")

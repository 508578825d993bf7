"""What an autoscaler can see of a pool: metric snapshots taken every scrape interval (as Prometheus does).

Per-pod gauges are read from the pods that are ready at the scrape (a pod still starting exports nothing):
``concurrency`` (running + waiting), ``queue_length`` (waiting), ``kv_cache_utilization`` (used / total KV blocks;
inside a fast-stepped decode run, the value at the run's start) and ``gpu_utilization`` (the busy fraction since
the previous scrape). Fleet-level series: ``request_rate`` (arrivals at the fleet over the metric's window) and
latency percentiles over the pool's requests finished within the window (None when none finished: a missing
metric, HPA-9).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from sim.scaling_config import POD_METRICS, latency_metric, metric_kind


def observed_rate(arrivals: int, window_s: float, now_s: float) -> float:
    """Arrivals per second over the last ``window_s``, or over the whole run while it is shorter than the window
    (the run starts at 0): dividing by the full window then would read a steady 4 req/s as 1 req/s at 15 s, and an
    autoscaler would drain a warm fleet at its first sync."""
    span = min(window_s, now_s)
    return arrivals / span if span > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One scrape: per ready replica, its gauges; and the fleet-level series by metric name."""

    time_s: float
    pods: dict[int, dict[str, float]]
    series: dict[str, float | None]


def _latency(req, column: str) -> float | None:
    if column == "ttft_s":
        return req.first_token_s - req.arrival_s
    if column == "e2e_s":
        return req.finish_s - req.arrival_s
    if column == "queue_s":
        return req.scheduled_s - req.arrival_s
    if req.output_tokens > 1:
        return (req.finish_s - req.first_token_s) / (req.output_tokens - 1)
    return None


class Scraper:
    """Takes a :class:`Snapshot` of one pool every ``interval_s`` and keeps those still needed."""

    def __init__(self, env, fleet, pool, metrics, interval_s: float, delay_s: float) -> None:
        self.env = env
        self.fleet = fleet
        self.pool = pool
        self.metrics = metrics
        self.interval_s = interval_s
        self.delay_s = delay_s
        self.window_s = max((m.window_s for m in metrics if metric_kind(m.name) != "pods"), default=0.0)
        self.snapshots: deque[Snapshot] = deque()
        self._busy: dict[int, tuple[float, float]] = {}  # replica id -> (time, busy seconds) at the last scrape

    def loop(self):
        while True:
            self.snapshots.append(self.take())
            while len(self.snapshots) > 1 and self.snapshots[1].time_s <= self.env.now - self.delay_s:
                self.snapshots.popleft()  # a newer snapshot is already visible
            yield self.env.timeout(self.interval_s)

    def visible(self) -> Snapshot | None:
        """The newest snapshot that has reached the autoscaler (taken at least ``delay_s`` ago)."""
        seen = [s for s in self.snapshots if s.time_s <= self.env.now - self.delay_s]
        return seen[-1] if seen else None

    def take(self) -> Snapshot:
        now = self.env.now
        pods: dict[int, dict[str, float]] = {}
        names = {m.name for m in self.metrics} & set(POD_METRICS)
        for member in self.pool.members:
            if member.state != "ready":
                continue
            r = member.replica
            st = r.state
            busy = r.busy_until(now)
            since, before = self._busy.get(r.replica_id, (member.log[-1][0], 0.0))  # no work before it was ready
            self._busy[r.replica_id] = (now, busy)
            values = {"concurrency": float(len(st.running) + len(st.waiting)),
                      "queue_length": float(len(st.waiting)),
                      "kv_cache_utilization": st.used_blocks / st.total_blocks if st.total_blocks else 0.0,
                      "gpu_utilization": (busy - before) / (now - since) if now > since else 0.0}
            pods[r.replica_id] = {k: values[k] for k in names}
        return Snapshot(now, pods, self._series(now))

    def _series(self, now: float) -> dict[str, float | None]:
        fleet = self.fleet
        finished = fleet.finished_by_pool[self.pool.name]
        while finished and finished[0].finish_s <= now - self.window_s:
            finished.popleft()
        out: dict[str, float | None] = {}
        for m in self.metrics:
            kind = metric_kind(m.name)
            if kind == "rate":
                out[m.name] = observed_rate(fleet.arrivals_within(m.window_s, self.pool.name), m.window_s, now)
            elif kind == "latency":
                column, q = latency_metric(m.name)
                values = [v for req in finished if req.finish_s > now - m.window_s
                          for v in (_latency(req, column),) if v is not None]
                out[m.name] = float(np.quantile(values, q)) if values else None
        return out

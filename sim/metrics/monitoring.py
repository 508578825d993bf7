"""Monitoring and alerts as operators run them: metrics sampled every ``interval_s`` per pool (and ``all``), and
Prometheus-style alert rules over them, computed after the run from its time series, records and replicas.

Metrics at each sample time ``t`` (the end of the interval ``(t - interval_s, t]``):

- ``gpu_utilisation``: busy replica-seconds over alive replica-seconds in the interval (DCGM's averaged
  utilisation; a replica is alive from its start, cold start included, to its end);
- ``queue_depth``: requests waiting in the pool's queues at ``t`` (a gauge, read at the scrape); the fleet's also
  counts those waiting at the gateway for a replica (scale from zero, a pool down for maintenance);
- ``ttft_p99_s``, ``tpot_p99_s``, ``e2e_p99_s``: the 99th percentile of the requests that reached that point
  (first token, or finish) within the last ``latency_window_s``; NaN when none did;
- ``cost_per_request_usd``: the alive replicas' GPU cost in the interval over the requests finished in it.

An alert fires once its condition has held at every sample for ``for_s`` (pending before that), and resolves at the
first sample where it does not hold (a NaN sample does not hold). Alert intervals are ``[start_s, end_s)`` from the
firing sample to the resolving one (or the end of the run).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MONITORING_METRICS = ("gpu_utilisation", "queue_depth", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s",
                      "cost_per_request_usd")
ALERT_COLUMNS = ["alert", "pool", "metric", "start_s", "end_s", "duration_s", "peak"]


def _step_integral(times: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Integral over each interval between consecutive ``edges`` of the right-continuous step function that takes
    ``values[i]`` from ``times[i]`` (0 before the first)."""
    if not len(times):
        return np.zeros(len(edges) - 1)
    widths = np.diff(times, append=np.inf)
    cumulative = np.concatenate([[0.0], np.cumsum(values[:-1] * widths[:-1])])

    def area(x: np.ndarray) -> np.ndarray:  # integral from -inf to x
        i = np.searchsorted(times, x, side="right") - 1
        out = np.zeros(len(x))
        ok = i >= 0
        out[ok] = cumulative[i[ok]] + values[i[ok]] * (x[ok] - times[i[ok]])
        return out

    a = area(edges)
    return np.diff(a)


def _step_value(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The step function's value at each point of ``at`` (its last change at or before it; 0 before the first)."""
    i = np.searchsorted(times, at, side="right") - 1
    return np.where(i >= 0, values[np.clip(i, 0, None)], 0)


def _alive(replicas: pd.DataFrame, edges: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Alive replica-seconds (times ``weight`` each) in each interval."""
    start, end = replicas["start_s"].to_numpy(float), replicas["end_s"].to_numpy(float)
    w = np.ones(len(start)) if weight is None else weight
    lo, hi = edges[:-1, None], edges[1:, None]
    overlap = np.clip(np.minimum(hi, end[None, :]) - np.maximum(lo, start[None, :]), 0, None)
    return overlap @ w


def _rolling_p99(times: np.ndarray, values: np.ndarray, at: np.ndarray, window_s: float) -> np.ndarray:
    order = np.argsort(times, kind="stable")
    t, v = times[order], values[order]
    lo = np.searchsorted(t, at - window_s, side="right")
    hi = np.searchsorted(t, at, side="right")
    return np.array([np.quantile(v[a:b], 0.99) if b > a else np.nan for a, b in zip(lo, hi, strict=True)])


def monitoring_frame(timeseries: pd.DataFrame, requests: pd.DataFrame, replicas: pd.DataFrame, end_s: float,
                     interval_s: float, latency_window_s: float,
                     gateway: list[tuple[float, int]] | None = None) -> pd.DataFrame:
    """The sampled metrics: one row per (sample time, pool), pools first and then ``all``. The last interval ends at
    the run's end. ``gateway``: (time, requests waiting at the gateway) changes, counted in the fleet's queue depth
    (requests that no ready replica could take yet)."""
    edges = np.arange(0.0, end_s, interval_s)
    edges = np.append(edges, end_s) if end_s > 0 else np.array([0.0, interval_s])
    at = edges[1:]
    frames = []
    pools = [str(p) for p in dict.fromkeys(replicas["pool"].astype(str))]
    price = (replicas["gpus"] * (replicas["usd_per_gpu_hour"] + replicas.get("licence_usd_per_gpu_hour", 0.0))
             ).to_numpy(float) / 3600
    for pool in [*pools, None]:
        rep = replicas if pool is None else replicas[replicas["pool"].astype(str) == pool]
        ts = timeseries if pool is None else timeseries[timeseries["pool"].astype(str) == pool]
        req = requests if pool is None else requests[requests["pool"].astype(str) == pool]
        busy = np.zeros(len(at))
        waiting = np.zeros(len(at))
        for _, g in ts.groupby(ts["pool"].astype(str), sort=False):
            times = g["time_s"].to_numpy(float)
            busy += _step_integral(times, g["busy_replicas"].to_numpy(float), edges)
            waiting += _step_value(times, g["waiting"].to_numpy(float), at)
        if pool is None and gateway:
            g_times, g_values = (np.array(x, dtype=float) for x in zip(*gateway, strict=True))
            waiting += _step_value(g_times, g_values, at)
        alive = _alive(rep, edges)
        cost = _alive(rep, edges, price[replicas.index.get_indexer(rep.index)])
        done = req[req["status"] == "finished"]
        finished = np.histogram(done["finish_s"].to_numpy(float), bins=edges)[0] if len(done) else np.zeros(len(at))
        with np.errstate(invalid="ignore", divide="ignore"):
            frame = pd.DataFrame({
                "time_s": at,
                "pool": "all" if pool is None else pool,
                "gpu_utilisation": np.where(alive > 0, busy / np.where(alive > 0, alive, 1), np.nan),
                "queue_depth": waiting,
                "ttft_p99_s": _rolling_p99(done["first_token_s"].to_numpy(float), done["ttft_s"].to_numpy(float),
                                           at, latency_window_s),
                "tpot_p99_s": _rolling_p99(done["finish_s"].to_numpy(float), done["tpot_s"].to_numpy(float), at,
                                           latency_window_s),
                "e2e_p99_s": _rolling_p99(done["finish_s"].to_numpy(float), done["e2e_s"].to_numpy(float), at,
                                          latency_window_s),
                "cost_per_request_usd": np.where(finished > 0, cost / np.where(finished > 0, finished, 1), np.nan),
            })
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def alert_intervals(samples: pd.DataFrame, name: str, metric: str, above: float | None, below: float | None,
                    for_s: float, end_s: float) -> list[dict]:
    """Firing intervals of one rule over one pool's samples (``time_s`` and ``metric``, in time order)."""
    times = samples["time_s"].to_numpy(float)
    values = samples[metric].to_numpy(float)
    holds = np.ones(len(values), dtype=bool)
    if above is not None:
        holds &= values > above
    if below is not None:
        holds &= values < below
    holds &= ~np.isnan(values)
    out, since, firing, peak = [], None, None, None
    pool = samples["pool"].iloc[0] if len(samples) else None
    for t, v, h in zip(times, values, holds, strict=True):
        if h:
            since = t if since is None else since
            if firing is None and t - since >= for_s:
                firing, peak = t, v
            elif firing is not None:
                peak = max(peak, v) if above is not None else min(peak, v)
        else:
            if firing is not None:
                out.append({"alert": name, "pool": pool, "metric": metric, "start_s": firing, "end_s": t,
                            "duration_s": t - firing, "peak": peak})
            since = firing = None
    if firing is not None:
        out.append({"alert": name, "pool": pool, "metric": metric, "start_s": firing, "end_s": end_s,
                    "duration_s": end_s - firing, "peak": peak})
    return out


def alerts_frame(monitoring: pd.DataFrame, rules, end_s: float) -> pd.DataFrame:
    """Every rule's firing intervals (``rules``: objects with name, metric, above, below, for_s, pool)."""
    rows = []
    for rule in rules:
        pools = [rule.pool] if rule.pool is not None else ["all"]
        for pool in pools:
            samples = monitoring[monitoring["pool"] == pool].sort_values("time_s")
            rows += alert_intervals(samples, rule.name, rule.metric, rule.above, rule.below, rule.for_s, end_s)
    return pd.DataFrame(rows, columns=ALERT_COLUMNS)

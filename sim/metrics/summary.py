"""Summary figures of a run, overall and per pool (plain dicts and a tidy DataFrame)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from sim.config import SloConfig

LATENCY_METRICS = ("ttft_s", "tpot_s", "max_itl_s", "e2e_s", "queue_s")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def _stats(values: np.ndarray) -> dict[str, float | None]:
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return {"mean": None, **dict.fromkeys(QUANTILES)}
    q = np.quantile(v, list(QUANTILES.values()))
    return {"mean": float(v.mean()), **{k: float(x) for k, x in zip(QUANTILES, q, strict=True)}}


def _equals(column: pd.Series, value: str) -> np.ndarray:
    """``column == value`` as a boolean array; on a categorical column, by its codes (no strings compared)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = column.cat.categories
        if value not in categories:
            return np.zeros(len(column), dtype=bool)
        return column.cat.codes.to_numpy() == categories.get_loc(value)
    return (column == value).to_numpy(dtype=bool, na_value=False, copy=True)  # writable: callers mask in place


def _slo_met(requests: pd.DataFrame, slo: SloConfig | dict[str, SloConfig]) -> np.ndarray:
    met = _equals(requests["status"], "finished")
    per_class = slo.items() if isinstance(slo, dict) else [(None, slo)]
    for cls, targets in per_class:
        rows = None if cls is None else _equals(requests["class"], cls)
        for column in ("ttft_s", "tpot_s", "e2e_s"):
            target = getattr(targets, column)
            if target is not None:
                miss = requests[column].to_numpy(dtype=float) > target  # NaN (not reached) is no miss
                met &= ~(miss if rows is None else miss & rows)
    return met


def slo_met(requests: pd.DataFrame, slo: SloConfig | dict[str, SloConfig]) -> pd.Series:
    """True for finished requests that meet every SLO given (a one-token output has no TPOT to miss); ``slo`` is one
    SLO for all, or one per traffic class (by the ``class`` column)."""
    return pd.Series(_slo_met(requests, slo), index=requests.index, name="slo_met")


def _targets(slo: SloConfig | dict[str, SloConfig]) -> dict:
    if isinstance(slo, dict):
        targets = {cls: {k: v for k, v in s.model_dump().items() if v is not None} for cls, s in slo.items()}
        return targets if any(targets.values()) else {}
    return {k: v for k, v in slo.model_dump().items() if v is not None}


def _block(requests: pd.DataFrame, slo: SloConfig | dict[str, SloConfig], duration_s: float,
           rows: np.ndarray | None = None) -> dict:
    """The figures of the requests in ``rows`` (a boolean mask; None: all of them)."""

    # Column by column under the mask, as arrays, never a filtered copy of the table: a long run's records are large.
    def column(name: str) -> np.ndarray:
        values = requests[name].to_numpy()
        return values if rows is None else values[rows]

    def status_is(value: str) -> np.ndarray:
        mask = _equals(requests["status"], value)
        return mask if rows is None else mask[rows]

    finished = status_is("finished")
    n_finished = int(finished.sum())
    in_flight = int(status_is("in_flight").sum())
    arrived = len(finished)
    judged = arrived - in_flight
    interruptions = column("interruptions")
    out = {
        "requests": {
            "arrived": arrived,
            "finished": n_finished,
            "rejected": int(status_is("rejected").sum()),
            "in_flight": in_flight,
            "preemptions": int(column("preemptions").sum()),
            "interrupted": int((interruptions > 0).sum()),
            "restarts": int(interruptions.sum()),
            "lost_work_s": float(np.nansum(column("lost_s"))),
        },
        # Prompt tokens whose prefill the prefix cache saved, over all prompt tokens of finished requests.
        "prefix_cache_hit_rate": (float(column("cached_tokens")[finished].sum()
                                        / column("prompt_tokens")[finished].sum()) if n_finished else None),
    }
    for metric in LATENCY_METRICS:
        out[metric] = _stats(column(metric)[finished])
    if "kv_transfer_s" in requests:  # disaggregated serving
        kv_transfer = column("kv_transfer_s")
        if not np.isnan(kv_transfer).all():
            out["kv_transfer_s"] = _stats(kv_transfer[finished])
    out_tokens = float(column("output_tokens")[finished].sum(dtype=np.int64))
    in_tokens = float(column("prompt_tokens")[finished].sum(dtype=np.int64))
    out["throughput"] = {
        "requests_per_s": n_finished / duration_s if duration_s > 0 else None,
        "output_tokens_per_s": out_tokens / duration_s if duration_s > 0 else None,
        "input_tokens_per_s": in_tokens / duration_s if duration_s > 0 else None,
    }
    targets = _targets(slo)
    if judged and targets:
        met = _slo_met(requests, slo)
        attainment = float((met if rows is None else met[rows]).sum() / judged)
    out["slo"] = {
        "targets": targets,
        # Rejected requests count as misses; requests still in flight are not judged.
        "attainment": attainment if judged and targets else None,
    }
    return out


def _gpu_hours(hourly: pd.DataFrame) -> dict[str, float]:
    """Billed GPU-hours and their split by what the GPUs were doing (see :mod:`sim.metrics.lifecycle`)."""
    keys = ("ready", "cold_start", "draining", "idle")
    if not len(hourly):
        return {"billed": 0.0, **dict.fromkeys(keys, 0.0)}
    return {"billed": float(hourly["gpu_hours"].sum()),
            **{k: float(hourly[f"{k}_gpu_hours"].sum()) for k in keys}}


def summarize(requests: pd.DataFrame, hourly_cost: pd.DataFrame, pool_prices: dict[str, str],
              slo: SloConfig | dict[str, SloConfig],
              duration_s: float, energy_kwh: float) -> dict:
    """The run's summary: counts, latency statistics, throughput, SLO attainment, cost, energy.

    Throughput is over the whole run, from time 0 to the end (the last completion, or the clock limit).
    ``usd_per_hour`` is the total divided by the run's length in hours.
    """
    summary = _block(requests, slo, duration_s)
    whole = copy.deepcopy(summary)  # a pool that served every request has the same figures (one pool: the usual)
    usd_total = float(hourly_cost["usd"].sum()) if len(hourly_cost) else 0.0
    finished = _equals(requests["status"], "finished")
    out_tokens = float(requests["output_tokens"].to_numpy()[finished].sum(dtype=np.int64))
    hours = duration_s / 3600
    summary["cost"] = {
        "usd_total": usd_total,
        "usd_per_hour": usd_total / hours if hours > 0 else None,
        "usd_per_million_output_tokens": usd_total / out_tokens * 1e6 if out_tokens else None,
    }
    summary["energy_kwh"] = energy_kwh
    summary["gpu_hours"] = _gpu_hours(hourly_cost)
    summary["duration_s"] = duration_s
    pools = {}
    for pool, price in pool_prices.items():
        # A prefill pool of a disaggregated fleet: the requests whose prompts it computed.
        mask = _equals(requests["pool"], pool) | _equals(requests["prefill_pool"], pool)
        block = copy.deepcopy(whole) if mask.all() else _block(requests, slo, duration_s, mask)
        usd = float(hourly_cost.loc[hourly_cost["pool"] == pool, "usd"].sum()) if len(hourly_cost) else 0.0
        pool_tokens = float(requests["output_tokens"].to_numpy()[finished & mask].sum(dtype=np.int64))
        block["cost"] = {"usd_total": usd, "usd_per_hour": usd / hours if hours > 0 else None,
                         "usd_per_million_output_tokens": usd / pool_tokens * 1e6 if pool_tokens else None,
                         "price": price}
        block["gpu_hours"] = _gpu_hours(hourly_cost[hourly_cost["pool"] == pool] if len(hourly_cost) else hourly_cost)
        pools[pool] = block
    summary["pools"] = pools
    if isinstance(slo, dict) and len(slo) > 1:
        summary["classes"] = {cls: _block(requests, cls_slo, duration_s, _equals(requests["class"], cls))
                              for cls, cls_slo in slo.items()}
    return summary


def pool_table(summary: dict) -> pd.DataFrame:
    """One row per pool (and ``all``) with the headline figures, for printing or plotting."""
    rows = []
    for name, block in [*summary["pools"].items(), ("all", summary)]:
        row = {"pool": name, "finished": block["requests"]["finished"], "rejected": block["requests"]["rejected"]}
        for metric in ("ttft_s", "tpot_s", "e2e_s"):
            for q in ("p50", "p90", "p99"):
                row[f"{metric}_{q}"] = block[metric][q]
        row["output_tokens_per_s"] = block["throughput"]["output_tokens_per_s"]
        row["slo_attainment"] = block["slo"]["attainment"]
        row["usd_per_hour"] = block["cost"]["usd_per_hour"]
        rows.append(row)
    table = pd.DataFrame(rows)
    # A figure of no request is None in the summary (null in JSON): NaN here, so every figure column is float.
    figures = [c for c in table.columns if c not in ("pool", "finished", "rejected")]
    table[figures] = table[figures].astype(float)
    return table

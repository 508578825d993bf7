"""Plot helpers for notebooks: each takes DataFrames and an optional ``ax``, draws, and returns the ``ax``.

They never call ``plt.show()`` or save files; the caller owns the figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.5))
    return ax


def plot_latency_cdf(requests: pd.DataFrame, metric: str = "ttft_s", *, by: str = "pool", ax=None):
    """Empirical CDF of a latency column (finished requests), one line per ``by`` group, log-x."""
    ax = _axes(ax)
    done = requests[requests["status"] == "finished"]
    for name, group in done.groupby(by, observed=True):
        values = np.sort(group[metric].dropna().to_numpy())
        if len(values):
            ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=str(name))
    ax.set_xscale("log")
    ax.set_xlabel(metric)
    ax.set_ylabel("fraction of requests")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title=by)
    return ax


def plot_pool_timeseries(timeseries: pd.DataFrame, column: str = "running", *, ax=None):
    """A change-point column (running, waiting, kv_utilization, busy_replicas) per pool, as steps over time."""
    ax = _axes(ax)
    for name, group in timeseries.groupby("pool", observed=True):
        ax.step(group["time_s"], group[column], where="post", label=str(name))
    ax.set_xlabel("time_s")
    ax.set_ylabel(column)
    ax.legend(title="pool")
    return ax


def plot_cost_by_hour(cost_by_hour: pd.DataFrame, *, ax=None):
    """USD per clock hour, stacked by pool."""
    ax = _axes(ax)
    table = cost_by_hour.pivot_table(index="hour", columns="pool", values="usd", aggfunc="sum", observed=True)
    bottom = np.zeros(len(table))
    for pool in table.columns:
        values = table[pool].fillna(0).to_numpy()
        ax.bar(table.index, values, bottom=bottom, label=str(pool))
        bottom += values
    ax.set_xlabel("hour")
    ax.set_ylabel("usd")
    ax.legend(title="pool")
    return ax

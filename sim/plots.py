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


def _legend(ax, empty: str = "no data", **kwargs) -> None:
    """The legend, or where nothing was drawn (no rows, or none of the pools asked for) a note that says so: an
    empty figure should not look like a bug, nor warn."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)
    else:
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center")


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
    _legend(ax, "no finished requests", title=by)
    return ax


def plot_pool_timeseries(timeseries: pd.DataFrame, column: str = "running", *, ax=None):
    """A change-point column (running, waiting, kv_utilization, busy_replicas) per pool, as steps over time."""
    ax = _axes(ax)
    for name, group in timeseries.groupby("pool", observed=True):
        ax.step(group["time_s"], group[column], where="post", label=str(name))
    ax.set_xlabel("time_s")
    ax.set_ylabel(column)
    _legend(ax, title="pool")
    return ax


def plot_cost_by_hour(cost_by_hour: pd.DataFrame, *, order: list[str] | None = None, ax=None):
    """USD per clock hour, stacked by pool (in ``order``, default: as they first appear)."""
    ax = _axes(ax)
    table = cost_by_hour.pivot_table(index="hour", columns="pool", values="usd", aggfunc="sum", observed=True)
    table = table[[p for p in (order or pd.unique(cost_by_hour["pool"])) if p in table.columns]]
    bottom = np.zeros(len(table))
    for pool in table.columns:
        values = table[pool].fillna(0).to_numpy()
        ax.bar(table.index, values, bottom=bottom, width=0.8, label=str(pool))
        bottom += values
    ax.set_xticks(table.index)
    ax.set_xlabel("clock hour of the run")
    ax.set_ylabel("USD in the hour")
    _legend(ax, title="pool")
    return ax


def plot_replicas_over_time(replicas: pd.DataFrame, *, order: list[str] | None = None, ax=None):
    """Replicas alive (from their start to their end, cold starts included) over time, stacked by pool (in
    ``order``, default: as they first appear)."""
    ax = _axes(ax)
    if not len(replicas):
        return ax
    times = np.unique(np.concatenate([replicas["start_s"].to_numpy(), replicas["end_s"].to_numpy()]))
    seen = list(dict.fromkeys(replicas["pool"].astype(str)))
    pools = [p for p in order if p in seen] if order else seen
    counts = []
    for pool in pools:
        rows = replicas[replicas["pool"].astype(str) == pool]
        start, end = rows["start_s"].to_numpy(), rows["end_s"].to_numpy()
        counts.append(((start[None, :] <= times[:, None]) & (end[None, :] > times[:, None])).sum(axis=1))
    if pools:
        ax.stackplot(times, counts, labels=pools, step="post")
    ax.set_xlabel("time_s")
    ax.set_ylabel("replicas")
    _legend(ax, title="pool", loc="upper left")
    return ax


def plot_slo_attainment(summary: dict, *, ax=None):
    """SLO attainment per pool (and per traffic class, when there are several), as horizontal bars in percent."""
    ax = _axes(ax)
    rows = [(f"pool {name}", block["slo"]["attainment"]) for name, block in summary.get("pools", {}).items()]
    rows += [(f"class {name}", block["slo"]["attainment"]) for name, block in summary.get("classes", {}).items()]
    rows.append(("all", summary["slo"]["attainment"]))
    rows = [(label, 100 * value) for label, value in rows if value is not None]
    if rows:
        labels, values = zip(*rows, strict=True)
        ax.barh(labels, values, color="tab:green")
        for y, v in enumerate(values):
            ax.text(min(v, 99.0), y, f" {v:.1f}%", va="center", ha="right" if v > 80 else "left")
    ax.set_xlim(0, 100)
    ax.set_xlabel("requests within the SLO (%)")
    ax.invert_yaxis()
    return ax


def plot_gpu_comparison(table: pd.DataFrame, metric: str = "usd_per_m_tokens", *, ax=None):
    """A :func:`sim.review.gpu_comparison` figure as grouped bars: one group per model and precision, one bar per
    GPU (deployments that do not fit are left out)."""
    ax = _axes(ax)
    fits = table[table["fits"]].copy()
    fits["group"] = fits["model"] + " " + fits["precision"]
    pivot = fits.pivot_table(index="group", columns="gpu", values=metric, aggfunc="first", sort=False)
    pivot = pivot[[g for g in pd.unique(fits["gpu"]) if g in pivot.columns]]
    width = 0.8 / max(1, len(pivot.columns))
    x = np.arange(len(pivot))
    for i, gpu in enumerate(pivot.columns):
        ax.bar(x + i * width, pivot[gpu].to_numpy(), width, label=str(gpu))
    ax.set_xticks(x + width * (len(pivot.columns) - 1) / 2, pivot.index, rotation=30, ha="right")
    ax.set_ylabel(metric)
    _legend(ax, title="gpu")
    return ax


def plot_pareto(trials: pd.DataFrame, objective: str, other: str, front: pd.DataFrame | None = None, *, ax=None):
    """Tuning trials (``fleetsim tune``): ``objective`` against ``other``, feasible ones filled, the front joined."""
    ax = _axes(ax)
    feasible = trials["feasible"].astype(bool)
    ax.scatter(trials.loc[~feasible, objective], trials.loc[~feasible, other], facecolors="none",
               edgecolors="tab:gray", label="infeasible")
    ax.scatter(trials.loc[feasible, objective], trials.loc[feasible, other], color="tab:green", label="feasible")
    if front is not None and len(front):
        ax.step(front[objective], front[other], where="post", color="tab:blue", label="Pareto front")
    ax.set_xlabel(objective)
    ax.set_ylabel(other)
    _legend(ax)
    return ax


def plot_sweep_metric(summary: pd.DataFrame, metric: str, x: str, *, by: str | None = None, ax=None):
    """A sweep's per-arm means (``fleetsim sweep`` summary) of ``metric`` against parameter ``x``, one line per value
    of parameter ``by`` (default: one line per setting of everything else the arms vary, the variant included; a
    single line when ``x`` is all they vary), with the 95% confidence intervals as error bars."""
    import json

    ax = _axes(ax)
    rows = summary[summary["metric"] == metric].copy()
    params = rows["params"].map(json.loads)
    rows["_x"] = params.map(lambda p: p.get(x))
    if by:
        rows["_by"] = params.map(lambda p: p.get(by))
    else:  # the arm's label ("variant, key=value, ...") without x's part
        rows["_by"] = rows["arm_label"].map(
            lambda label: ", ".join(part for part in label.split(", ") if not part.startswith(f"{x}=")) or metric)
    for name, group in rows.groupby("_by", sort=False):
        group = group.sort_values("_x")
        err = (group["ci_high"] - group["ci_low"]) / 2
        ax.errorbar(group["_x"], group["mean"], yerr=err.fillna(0), marker="o", capsize=3, label=str(name))
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    _legend(ax)
    return ax


def plot_monitoring(monitoring: pd.DataFrame, metric: str, alerts: pd.DataFrame | None = None, *, pool: str = "all",
                    ax=None):
    """A sampled metric (``Results.monitoring``) over time for ``pool``, with the firing intervals of the alerts on
    that metric shaded."""
    ax = _axes(ax)
    rows = monitoring[monitoring["pool"] == pool]
    ax.plot(rows["time_s"], rows[metric], drawstyle="steps-pre", label=metric)
    if alerts is not None and len(alerts):
        fired = alerts[(alerts["metric"] == metric) & (alerts["pool"] == pool)]
        for i, (_, a) in enumerate(fired.iterrows()):
            ax.axvspan(a["start_s"], a["end_s"], color="tab:red", alpha=0.2, label=a["alert"] if i == 0 else None)
    ax.set_xlabel("time_s")
    ax.set_ylabel(metric)
    _legend(ax)
    return ax

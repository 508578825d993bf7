"""The fidelity report's figures: predicted against measured, and error CDFs.

Matplotlib figures on an Agg canvas (no pyplot state); the CLI saves them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sim.perf.report import FAMILIES, FidelityReport


def _figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (4.2, 3.8)) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())


def _axes(ax):
    return ax if ax is not None else _figure(1)[1][0]


def plot_predicted_vs_measured(pred: pd.DataFrame, *, ax=None, title: str = ""):
    """Predicted against measured latency (µs, log-log), one colour per dtype, with y = x and ±15%."""
    ax = _axes(ax)
    if len(pred) == 0:
        ax.set_title(f"{title} (no rows)")
        return ax
    few = len(pred) < 500
    for dtype, rows in pred.groupby("dtype", sort=True):
        ax.scatter(rows["measured_s"] * 1e6, rows["predicted_s"] * 1e6, s=14 if few else 2, alpha=0.8 if few else 0.25,
                   label=str(dtype), rasterized=True, linewidths=0)
    lo = float(min(pred["measured_s"].min(), pred["predicted_s"].min())) * 1e6 / 1.5
    hi = float(max(pred["measured_s"].max(), pred["predicted_s"].max())) * 1e6 * 1.5
    line = np.array([lo, hi])
    ax.plot(line, line, color="black", lw=0.8)
    for f in (0.85, 1.15):
        ax.plot(line, line * f, color="grey", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured µs")
    ax.set_ylabel("predicted µs")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(markerscale=1 if few else 4, fontsize="small")
    return ax


def plot_error_cdf(pred: pd.DataFrame, by: list[str], *, ax=None, title: str = "", linestyle: str = "-"):
    """Empirical CDF of APE in percent (log x), one line per ``by`` group; dotted lines at 5%, 15%, 25%."""
    ax = _axes(ax)
    top = 1000.0
    for key, rows in pred.groupby(by, sort=True):
        values = np.sort(np.maximum(100 * rows["ape"].to_numpy(float), 1e-3))
        top = max(top, 1.5 * float(values[-1]))
        label = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", ls=linestyle, label=label)
    for x in (5, 15, 25):
        ax.axvline(x, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlim(1e-2, top)
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}%")
    ax.set_xlabel("absolute percentage error")
    ax.set_ylabel("fraction of rows")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left")
    return ax


def report_figures(report: FidelityReport) -> dict[str, Figure]:
    """The report's figures by file name: predicted vs measured per GPU (held out) and per transfer direction,
    one panel per operator family; error CDFs per family."""
    figures = {}
    for gpu, rows in report.held_out.groupby("gpu", sort=False):
        fig, axes = _figure(len(FAMILIES))
        for ax, family in zip(axes, FAMILIES, strict=True):
            plot_predicted_vs_measured(rows[rows["family"] == family], ax=ax, title=f"{gpu} {family} (held out)")
        figures[f"predicted_vs_measured_{gpu}.png"] = fig
    if len(report.transfer):
        for (source, target), rows in report.transfer.groupby(["source", "target"], sort=False):
            fig, axes = _figure(len(FAMILIES))
            for ax, family in zip(axes, FAMILIES, strict=True):
                plot_predicted_vs_measured(rows[rows["family"] == family], ax=ax,
                                           title=f"{target} {family} ({source} curves)")
            figures[f"transfer_{source}_to_{target}.png"] = fig
    fig, axes = _figure(len(FAMILIES), 2)
    for i, family in enumerate(FAMILIES):
        held = report.held_out[report.held_out["family"] == family]
        plot_error_cdf(held, ["gpu", "dtype"], ax=axes[i], title=f"{family}: held out")
        if len(report.transfer):
            moved = report.transfer[report.transfer["family"] == family].assign(
                direction=lambda f: f["source"] + "->" + f["target"])
            plot_error_cdf(moved, ["direction", "dtype"], ax=axes[len(FAMILIES) + i],
                           title=f"{family}: cross-GPU transfer", linestyle="--")
        else:
            axes[len(FAMILIES) + i].set_visible(False)
    figures["error_cdf.png"] = fig
    return figures

"""``fleetsim sweep``: the command line of :mod:`sim.sweep`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from sim.outpaths import out_folder
from sim.sweep import BACKENDS, SweepError, load_experiment, run_sweep, summarize_sweep
from sim.sweep.runner import check_workers


def add_parser(sub) -> None:
    sw = sub.add_parser("sweep", help="run an experiment: a base scenario over parameters and replications")
    sw.add_argument("experiment", help="experiment YAML file")
    sw.add_argument("--backend", choices=BACKENDS, default="local", help="local process pool (default) or Ray")
    sw.add_argument("--workers", type=int, default=1, help="parallel runs (local processes, or Ray CPUs)")
    sw.add_argument("--address", default=None, help="Ray cluster address (e.g. auto); default: a local Ray instance")
    sw.add_argument("--out", default=None, help="results folder (default: results/<experiment name>)")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.set_defaults(func=cmd_sweep)


def summary_table(summary: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Arms x metrics (in ``metrics`` order), each cell ``mean ± 95% half-width`` (the mean alone with one
    replication)."""
    def cell(row) -> str:
        half = (row["ci_high"] - row["ci_low"]) / 2
        if pd.isna(half):
            return f"{row['mean']:.4g}"
        return f"{row['mean']:.4g} ± {0.0 if half <= 1e-9 * abs(row['mean']) else half:.2g}"

    cells = summary.assign(cell=summary.apply(cell, axis=1))
    table = cells.pivot(index=["arm", "arm_label"], columns="metric", values="cell").droplevel("arm")
    return table[metrics] if metrics else table


def cmd_sweep(args: argparse.Namespace) -> int:
    check_workers(args.workers, "--workers")
    if args.address is not None and args.backend != "ray":
        raise SweepError("--address is for --backend ray")
    exp, runs = load_experiment(args.experiment)
    out = out_folder(args.out or Path("results") / exp.name, "--out")
    start = time.perf_counter()
    data = run_sweep(exp, runs, out, args.backend, args.workers, args.address, progress=not args.quiet,
                     source=args.experiment)
    summary = summarize_sweep(data)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60):
        print(summary_table(summary, list(exp.metrics)).to_string())
    arms = summary["arm"].nunique()
    print(f"\n{len(runs)} runs ({arms} arms x {exp.replications} replications) in {time.perf_counter() - start:.1f} s; "
          f"dataset {out / 'runs'} (pandas.read_parquet), per-arm confidence intervals {out / 'summary.csv'}")
    return 0

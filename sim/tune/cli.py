"""``fleetsim tune``: the command line of :mod:`sim.tune`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from sim.outpaths import out_folder
from sim.sweep.runner import check_workers
from sim.tune import load_study, run_study, write_results


def add_parser(sub) -> None:
    tu = sub.add_parser("tune", help="search autoscaler parameters for the lowest cost that meets the SLOs")
    tu.add_argument("study", help="tuning YAML file (scenario, search, objective, trials)")
    tu.add_argument("--workers", type=int, default=1, help="replications of a trial run in parallel")
    tu.add_argument("--out", default=None, help="results folder (default: results/<study name>)")
    tu.add_argument("--quiet", action="store_true", help="no progress bar")
    tu.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    check_workers(args.workers, "--workers")
    study = load_study(args.study)
    cfg = study.config
    out = out_folder(args.out or Path("results") / cfg.name, "--out")
    start = time.perf_counter()
    table = run_study(study, args.workers, progress=not args.quiet)
    result = write_results(study, table, out)
    objective = cfg.objective.minimize
    print(f"study {cfg.name!r}: {len(table)} trials ({table.attrs['sampler']}), {result['feasible']} feasible, "
          f"{time.perf_counter() - start:.1f} s")
    if cfg.objective.constraints:
        print("constraints: " + ", ".join(
            f"{c.metric}" + (f" >= {c.min:g}" if c.min is not None else "") + (f" <= {c.max:g}" if c.max is not None
                                                                                else "")
            for c in cfg.objective.constraints))
    front = result.get("pareto")
    if front is not None and len(front):
        shown = [c for c in front.columns if c.startswith("param:")] + [objective, cfg.objective.constraints[0].metric]
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(f"\nPareto front ({objective} vs {cfg.objective.constraints[0].metric}):")
            print(front[["trial", *shown, "feasible"]].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    best = result["best"]
    if best is None:
        why = (f"no feasible trial has a value of {objective} (it is empty when no request of the run finished)"
               if result["feasible"] else "no trial met the constraints")
        print(f"\n{why}; trials in {out / 'trials.csv'}")
        return 1
    print(f"\nbest: trial {best['trial']}, {objective} = {best[objective]:.6g}, "
          + ", ".join(f"{k} = {v}" for k, v in best["values"].items()))
    print(f"ready scenario: {out / 'best_scenario.yaml'}; every trial: {out / 'trials.csv'}")
    return 0

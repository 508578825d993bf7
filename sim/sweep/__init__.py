"""Sweeps: many simulations of one base scenario, compared (``fleetsim sweep``).

An experiment file (:class:`~sim.sweep.config.Experiment`) names a scenario, the parameters that vary (grid, zip,
random, named variants), replications and metrics; :func:`load_experiment` validates it and every run's scenario
up front, and :func:`run_sweep` runs them (local processes or Ray) into a resumable Parquet dataset.
"""

from __future__ import annotations

from pathlib import Path

from sim.errors import ScenarioError
from sim.limits import MAX_RUNS
from sim.sweep.config import DEFAULT_METRICS, Experiment
from sim.sweep.expand import Arm, count_arms, expand, replication_seeds
from sim.sweep.files import SweepError, read_study_file
from sim.sweep.runner import BACKENDS, Run, plan_runs, run_sweep, summarize_sweep


def load_experiment(path: str | Path) -> tuple[Experiment, list[Run]]:
    """Read and validate an experiment file and plan its runs (each scenario resolved and checked now).

    Raises
    ------
    SweepError
        Naming the file and the field (or the arm and its scenario field) of the first problem.
    """
    exp, scenario_path = read_study_file(path, Experiment, "experiment")
    arms = count_arms(exp)
    if arms * exp.replications > MAX_RUNS:
        raise SweepError(f"{path}: parameters: {arms:,} arms x {exp.replications} replications = "
                         f"{arms * exp.replications:,} runs; at most {MAX_RUNS:,} per sweep (vary fewer values, or "
                         "split the experiment)")
    try:
        runs = plan_runs(exp, scenario_path, str(path))
    except ScenarioError as err:
        raise SweepError(str(err)) from None
    return exp, runs


__all__ = ["BACKENDS", "DEFAULT_METRICS", "Arm", "Experiment", "Run", "SweepError", "expand", "load_experiment",
           "plan_runs", "replication_seeds", "run_sweep", "summarize_sweep"]

"""Sweeps: many simulations of one base scenario, compared (``fleetsim sweep``).

An experiment file (:class:`~sim.sweep.config.Experiment`) names a scenario, the parameters that vary (grid, zip,
random, named variants), replications and metrics; :func:`load_experiment` validates it and every run's scenario
up front, and :func:`run_sweep` runs them (local processes or Ray) into a resumable Parquet dataset.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from sim.errors import ScenarioError
from sim.sweep.config import DEFAULT_METRICS, Experiment
from sim.sweep.expand import Arm, expand, replication_seeds
from sim.sweep.runner import BACKENDS, Run, SweepError, plan_runs, run_sweep, summarize_sweep
from sim.yamlio import describe_yaml_error, load_yaml


def load_experiment(path: str | Path) -> tuple[Experiment, list[Run]]:
    """Read and validate an experiment file and plan its runs (each scenario resolved and checked now).

    Raises
    ------
    SweepError
        Naming the file and the field (or the arm and its scenario field) of the first problem.
    """
    from sim.scenario import _message

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: experiment file not found")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SweepError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML: {describe_yaml_error(err)}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: an experiment is a mapping (name, scenario, parameters, ...)")
    try:
        exp = Experiment.model_validate(data)
    except ValidationError as err:
        field, msg = _message(err.errors()[0], data, Experiment)
        raise SweepError(f"{path}: {field}: {msg}") from None
    scenario_path = (path.parent / exp.scenario).resolve()
    if not scenario_path.is_file():
        raise SweepError(f"{path}: scenario: file not found: {exp.scenario} (relative to the experiment file)")
    try:
        runs = plan_runs(exp, scenario_path, str(path))
    except ScenarioError as err:
        raise SweepError(str(err)) from None
    return exp, runs


__all__ = ["BACKENDS", "DEFAULT_METRICS", "Arm", "Experiment", "Run", "SweepError", "expand", "load_experiment",
           "plan_runs", "replication_seeds", "run_sweep", "summarize_sweep"]

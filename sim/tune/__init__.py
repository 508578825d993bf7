"""Autoscaler tuning (``fleetsim tune``): search policy parameters for the lowest cost that meets the SLOs.

Each trial is a policy (values of the ``search`` keys) simulated on the same seeds; its figures are the means over
the replications. The search is Optuna's TPE with the constraints (the ``tune`` extra), or a scrambled Sobol
sequence over the space (scipy) without it. The result: every trial, the Pareto front of the objective against the
first constraint's figure, and the best feasible policy written as a ready scenario file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sim.errors import ScenarioError
from sim.scenario import load_scenario_with
from sim.sweep.config import RandomParameter
from sim.sweep.expand import replication_seeds
from sim.sweep.files import SweepError, read_study_file
from sim.sweep.runner import check_workers, metric_value, simulate_summary
from sim.tune.config import TuneConfig
from sim.workload.traces import plain


@dataclass
class Study:
    """A loaded tuning file: its config, base scenario path and source name (for messages)."""

    config: TuneConfig
    scenario_path: Path
    source: str

    def scenario(self, values: dict, seed: int):
        """The base scenario with ``set`` and ``values`` applied, validated."""
        try:
            return load_scenario_with(self.scenario_path, {**self.config.set, **values}, f"{self.source}: trial",
                                      seed, values_base=Path(self.source).resolve().parent)
        except ScenarioError as err:
            raise SweepError(str(err)) from None


def load_study(path: str | Path) -> Study:
    """Read and validate a tuning file; the base scenario is checked at both ends of the search space."""
    cfg, scenario_path = read_study_file(path, TuneConfig, "tuning")
    study = Study(cfg, scenario_path, str(path))
    for corner in (0.0, 1.0):  # both ends of every range must make a valid scenario
        study.scenario({k: from_unit(p, corner) for k, p in cfg.search.items()}, 0)
    return study


def from_unit(p: RandomParameter, u: float):
    """The value of a search dimension at ``u`` in [0, 1] (a Sobol coordinate)."""
    if p.uniform is not None:
        lo, hi = p.uniform
        return float(lo + u * (hi - lo))
    if p.loguniform is not None:
        lo, hi = map(math.log, p.loguniform)
        return float(math.exp(lo + u * (hi - lo)))
    if p.integer is not None:
        lo, hi = p.integer
        return int(min(hi, lo + math.floor(u * (hi - lo + 1))))
    return p.choice[min(len(p.choice) - 1, int(u * len(p.choice)))]


def _suggest(trial, key: str, p: RandomParameter):
    """The value of a search dimension asked from an Optuna trial."""
    if p.uniform is not None:
        return trial.suggest_float(key, *p.uniform)
    if p.loguniform is not None:
        return trial.suggest_float(key, *p.loguniform, log=True)
    if p.integer is not None:
        return trial.suggest_int(key, *p.integer)
    index = trial.suggest_categorical(key, list(range(len(p.choice))))
    return p.choice[index]


def evaluate(study: Study, values: dict, seeds: list[int], workers: int = 1) -> dict[str, float]:
    """Mean over the replications of the objective and every constraint's figure for one policy."""
    cfg = study.config
    metrics = [cfg.objective.minimize, *(c.metric for c in cfg.objective.constraints)]
    texts = [json.dumps(study.scenario(values, seed).model_dump(mode="json", by_alias=True)) for seed in seeds]
    if workers > 1 and len(texts) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            summaries = list(pool.map(simulate_summary, texts))
    else:
        summaries = [simulate_summary(t) for t in texts]
    out = {}
    for m in metrics:
        try:
            out[m] = float(np.mean([metric_value(s, m) for s in summaries]))
        except KeyError as err:
            raise SweepError(f"{study.source}: objective: {err.args[0]}") from None
    return out


def _row(study: Study, number: int, values: dict, figures: dict[str, float]) -> dict:
    cons = study.config.objective.constraints
    violation = sum(c.violation(figures[c.metric]) for c in cons)
    return {"trial": number, **{f"param:{k}": v for k, v in values.items()}, **figures,
            "violation": violation, "feasible": violation == 0.0}


def run_study(study: Study, workers: int = 1, progress: bool = True) -> pd.DataFrame:
    """Run the search; one row per trial: ``param:<key>`` values, the figures, ``violation``, ``feasible``."""
    workers = check_workers(workers)
    cfg = study.config
    seeds = replication_seeds(cfg.seed, cfg.replications)
    sampler = cfg.sampler
    if sampler == "auto":
        try:
            import optuna  # noqa: F401
            sampler = "tpe"
        except ImportError:
            sampler = "sobol"
    from tqdm import tqdm

    bar = tqdm(total=cfg.trials, desc=cfg.name, unit="trial", disable=not progress, dynamic_ncols=True)
    rows = []
    try:
        if sampler == "tpe":
            rows = _tpe(study, seeds, workers, bar)
        else:
            from scipy.stats import qmc

            # The first `trials` points of a 2^m-point draw (Sobol' balance holds for powers of two).
            m = max(0, math.ceil(math.log2(cfg.trials)))
            points = qmc.Sobol(d=len(cfg.search), scramble=True, seed=cfg.seed).random_base2(m)[:cfg.trials]
            for i, u in enumerate(points):
                values = {k: from_unit(p, float(x)) for (k, p), x in zip(cfg.search.items(), u, strict=True)}
                rows.append(_row(study, i, values, evaluate(study, values, seeds, workers)))
                bar.update(1)
    finally:
        bar.close()
    table = pd.DataFrame(rows)
    table.attrs["sampler"] = sampler
    return table


def _tpe(study: Study, seeds: list[int], workers: int, bar) -> list[dict]:
    try:
        import optuna
    except ImportError:
        raise SweepError("sampler tpe needs Optuna: pip install 'fleetsim[tune]' (or sampler: sobol)") from None
    cfg = study.config
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cons = cfg.objective.constraints
    # Optuna 5 takes the constraints from the trial (set_constraint); earlier versions from a function.
    new_api = hasattr(optuna.trial.Trial, "set_constraint")
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, **({} if new_api or not cons else {
        "constraints_func": lambda t: t.user_attrs["constraints"]}))
    opt = optuna.create_study(direction="minimize", sampler=sampler)
    rows = []
    for number in range(cfg.trials):
        trial = opt.ask()
        values = {k: _suggest(trial, k, p) for k, p in cfg.search.items()}
        figures = evaluate(study, values, seeds, workers)
        # Optuna reads a constraint as met when its value is <= 0.
        violations = [min(c.violation(figures[c.metric]), 1e12) for c in cons]
        if cons and new_api:
            for c, v in zip(cons, violations, strict=True):
                trial.set_constraint(c.metric, v)
        elif cons:
            trial.set_user_attr("constraints", violations)
        objective = figures[cfg.objective.minimize]
        opt.tell(trial, objective if objective == objective else float("inf"))
        rows.append(_row(study, number, values, figures))
        bar.update(1)
    return rows


def pareto_front(table: pd.DataFrame, objective: str, other: str, higher_is_better: bool) -> pd.DataFrame:
    """The trials no other trial beats on both ``objective`` (lower) and ``other`` (higher or lower)."""
    t = table.dropna(subset=[objective, other]).sort_values([objective, other],
                                                            ascending=[True, not higher_is_better])
    keep, best = [], -math.inf
    for i, row in t.iterrows():
        value = row[other] if higher_is_better else -row[other]
        if value > best:
            keep.append(i)
            best = value
    return t.loc[keep]


def best_trial(table: pd.DataFrame, objective: str) -> pd.Series | None:
    """The feasible trial with the lowest objective (ties: the first), or None if none is feasible."""
    feasible = table[table["feasible"]].dropna(subset=[objective])
    if not len(feasible):
        return None
    return feasible.sort_values([objective, "trial"], kind="mergesort").iloc[0]


def write_results(study: Study, table: pd.DataFrame, out: Path) -> dict:
    """Write ``trials.csv``, ``pareto.csv`` and (when a trial is feasible) ``best_scenario.yaml`` to ``out``."""
    cfg = study.config
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "trials.csv", index=False)
    objective = cfg.objective.minimize
    result: dict = {"trials": len(table), "feasible": int(table["feasible"].sum()), "best": None}
    if cfg.objective.constraints:
        first = cfg.objective.constraints[0]
        front = pareto_front(table, objective, first.metric, higher_is_better=first.min is not None)
        front.to_csv(out / "pareto.csv", index=False)
        result["pareto"] = front
    best = best_trial(table, objective)
    if best is not None:
        values = {k.removeprefix("param:"): plain(best[k]) for k in table.columns if k.startswith("param:")}
        seed = replication_seeds(cfg.seed, cfg.replications)[0]  # replication 0's: it reproduces that run
        scenario = study.scenario(values, seed)
        text = (f"# Best policy of tuning study {cfg.name!r} ({cfg.objective.minimize} = {best[objective]:.6g} over "
                f"{cfg.replications} replication(s), trial {int(best['trial'])} of {len(table)}): "
                f"{json.dumps(values)}\n")
        text += yaml.safe_dump(scenario.model_dump(mode="json", by_alias=True),
                               sort_keys=False)
        (out / "best_scenario.yaml").write_text(text, encoding="utf-8")
        result["best"] = {"trial": int(best["trial"]), "values": values, objective: float(best[objective])}
    return result

"""Run an experiment's runs on a local process pool or on Ray, resumably, into a Parquet dataset.

Each simulation's summary is written at once, by the driver, to ``OUT/cache/<scenario id>.json`` (a temporary file
renamed into place, so a killed sweep never leaves a half-written file); a re-run into the same folder simulates only
the scenarios not cached, and arms that resolve to the same scenario share one simulation. The dataset,
``OUT/runs/<run id>.parquet``, is built from the cache for the experiment as it is now: one file per run with one
row per metric (the run's arm, parameter values, replication, seed, ids and resolved scenario); files of an earlier
version of the experiment are removed. ``OUT/summary.csv`` holds each arm's mean, standard deviation and 95%
confidence interval (Student t over the replications) per metric.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from sim.config import Scenario
from sim.errors import ScenarioError
from sim.metrics.store import write_parquet
from sim.scenario import load_scenario_with
from sim.sweep.config import Experiment
from sim.sweep.expand import Arm, expand, replication_seeds
from sim.sweep.files import SweepError

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Run:
    """One simulation of the sweep: an arm at one replication."""

    arm: Arm
    replication: int
    seed: int
    scenario_json: str
    planned_from: str = ""  # plan_fingerprint of the experiment the run was planned from

    @property
    def scenario_id(self) -> str:
        """A hash of the resolved scenario (seed included): the simulation's identity, whatever arm asks for it."""
        return hashlib.sha256(self.scenario_json.encode()).hexdigest()[:16]

    def run_id(self, exp: Experiment) -> str:
        """A hash of the scenario, the arm, the replication and what the experiment keeps of it (name, metrics): a
        changed experiment never reuses another's rows."""
        key = json.dumps([self.scenario_id, exp.name, self.arm.label, self.arm.params_json(), self.replication,
                          list(exp.metrics)])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def plan_fingerprint(exp: Experiment) -> str:
    """What decides an experiment's runs (all but its name and metrics, which decide only the rows kept)."""
    return hashlib.sha256(exp.model_dump_json(exclude={"name", "metrics"}).encode()).hexdigest()[:16]


def plan_runs(exp: Experiment, scenario_path: Path, source: str) -> list[Run]:
    """Every run of ``exp``, each scenario resolved and validated now (before anything runs)."""
    seeds = replication_seeds(exp.seed, exp.replications)
    planned_from = plan_fingerprint(exp)
    runs = []
    for arm in expand(exp):
        try:
            scenario = load_scenario_with(scenario_path, {**exp.set, **arm.values}, f"{source}: arm {arm.label!r}",
                                          seeds[0], values_base=Path(source).resolve().parent)
        except ScenarioError as err:
            raise SweepError(str(err)) from None
        for r, seed in enumerate(seeds):
            text = json.dumps(scenario.model_copy(update={"seed": seed}).model_dump(mode="json", by_alias=True),
                              sort_keys=True)
            runs.append(Run(arm, r, seed, text, planned_from))
    return runs


def simulate_summary(scenario_json: str) -> dict:
    """Simulate one resolved scenario and return its summary (what a worker does; module level for pickling)."""
    from sim.simulate import simulate

    return simulate(Scenario.model_validate_json(scenario_json)).summary


def metric_value(summary: dict, path: str) -> float:
    """The figure at a dotted ``path`` of a summary (None: NaN); KeyError naming the path when it is not there."""
    node = summary
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            have = sorted(node) if isinstance(node, dict) else []
            raise KeyError(f"metric {path!r}: no {part!r} in the run's summary" +
                           (f"; there: {', '.join(have)}" if have else ""))
        node = node[part]
    if node is None:
        return float("nan")
    if isinstance(node, bool | int | float):
        return float(node)
    raise KeyError(f"metric {path!r} is not a number (a {type(node).__name__}); name a figure inside it")


def run_rows(exp: Experiment, run: Run, summary: dict) -> pd.DataFrame:
    """The rows a run contributes to the dataset: one per metric."""
    values = [metric_value(summary, m) for m in exp.metrics]
    n = len(values)
    return pd.DataFrame({
        "experiment": [exp.name] * n,
        "run_id": [run.run_id(exp)] * n,
        "scenario_id": [run.scenario_id] * n,
        "arm": np.full(n, run.arm.index, dtype=np.int64),
        "arm_label": [run.arm.label] * n,
        "params": [run.arm.params_json()] * n,
        "replication": np.full(n, run.replication, dtype=np.int64),
        "seed": np.full(n, run.seed, dtype=np.int64),
        "metric": list(exp.metrics),
        "value": np.array(values, dtype=float),
        "scenario": [run.scenario_json] * n,
    })


def _write_atomic(write: Callable[[Path], None], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _local(todo: list[Run], workers: int) -> Iterator[tuple[Run, dict]]:
    if workers <= 1:
        for run in todo:
            yield run, simulate_summary(run.scenario_json)
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        pending = {pool.submit(simulate_summary, run.scenario_json): run for run in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: pending[f].scenario_id):
                yield pending.pop(future), future.result()
    finally:  # a consumer that stops (an error, a bad metric) does not wait for the runs still queued
        pool.shutdown(wait=True, cancel_futures=True)


def _reachable(address: str) -> bool:
    """Whether ``host:port`` accepts a connection within 2 s (``auto`` and other forms are left to Ray)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return True
    try:
        with socket.create_connection((host.removeprefix("ray://") or "127.0.0.1", int(port)), timeout=2):
            return True
    except OSError:
        return False


def _ray(todo: list[Run], workers: int, address: str | None) -> Iterator[tuple[Run, dict]]:
    try:
        import ray
    except ImportError:
        raise SweepError("--backend ray needs Ray: pip install 'fleetsim[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address is not None and not _reachable(address):
            raise SweepError(f"--address {address}: no Ray cluster answers there")
        try:
            if address is not None:
                ray.init(address=address, log_to_driver=False)  # the address exactly as given
            else:
                ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
        except (ValueError, ConnectionError, RuntimeError) as err:
            raise SweepError(f"--address {address}: cannot join a Ray cluster: {str(err).splitlines()[0]}") from None
    try:
        remote = ray.remote(simulate_summary)
        pending = {remote.remote(run.scenario_json): run for run in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def check_workers(workers, option: str = "workers") -> int:
    """``workers`` as the whole number of at least 1 it must be (``option``: how the caller named it)."""
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise SweepError(f"{option} {workers!r}: must be a whole number, at least 1")
    return int(workers)


def run_sweep(exp: Experiment, runs: list[Run], out: Path, backend: str = "local", workers: int = 1,
              address: str | None = None, progress: bool = True,
              on_run: Callable[[Run], None] | None = None, source: str | None = None) -> pd.DataFrame:
    """Simulate every scenario of ``runs`` not already cached in ``out``, then write and return the dataset.

    Parameters
    ----------
    exp, runs
        The experiment and its planned runs (:func:`plan_runs`).
    out
        The results folder: ``cache/`` (one summary per simulated scenario), ``runs/`` (the dataset) and
        ``summary.csv``.
    backend, workers, address
        ``local`` (a process pool of ``workers``; 1: in this process) or ``ray`` (a local Ray instance with
        ``workers`` CPUs, or the cluster at ``address``, e.g. ``auto``).
    progress
        Show a progress bar with an ETA on stderr.
    on_run
        Called after each simulation's summary is cached (tests use it).
    source
        The experiment file, for messages.
    """
    if backend not in BACKENDS:
        raise SweepError(f"--backend {backend!r}: allowed: {', '.join(BACKENDS)}")
    workers = check_workers(workers)
    if not isinstance(out, str | os.PathLike):
        raise SweepError(f"out: give a folder path, not a {type(out).__name__}")
    if not runs:
        raise SweepError("runs: none to simulate (plan them from the experiment: load_experiment or plan_runs)")
    planned_from = plan_fingerprint(exp)
    if any(run.planned_from != planned_from for run in runs):
        # Their scenarios would run under this experiment's labels: rows that say one thing and measure another.
        raise SweepError("runs: planned from another version of the experiment (its scenario, set, parameters, "
                         "replications or seed differ); plan them again from this one (load_experiment or plan_runs)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out}: is a file; give a folder for the sweep's results")
    cache, folder = out / "cache", out / "runs"
    for d in (cache, folder):
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob("*.tmp"):  # a file that was being written when a sweep was killed
            stale.unlink()
    unique = {run.scenario_id: run for run in runs}  # arms that resolve to one scenario share its simulation
    cached = {sid for sid in unique if _cached_summary(cache / f"{sid}.json") is not None}
    todo = [run for sid, run in unique.items() if sid not in cached]
    from tqdm import tqdm

    where = f"{source}: " if source else ""
    bar = tqdm(total=len(unique), initial=len(unique) - len(todo), desc=exp.name, unit="run", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    results = _local(todo, workers) if backend == "local" else _ray(todo, workers, address)
    checked = False
    try:
        for run, summary in results:
            if not checked:  # the metric paths, on the first summary: a bad one stops the sweep at once
                try:
                    run_rows(exp, run, summary)
                except KeyError as err:
                    raise SweepError(f"{where}metrics: {err.args[0]}") from None
                checked = True
            text = json.dumps(summary)
            _write_atomic(lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"),
                          cache / f"{run.scenario_id}.json")
            bar.update(1)
            if on_run is not None:
                on_run(run)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
        bar.close()
    frames = []
    for run in runs:
        summary = _cached_summary(cache / f"{run.scenario_id}.json")
        if summary is None:  # written by this sweep moments ago: changed by someone else since
            raise SweepError(f"{cache}: run {run.scenario_id}'s summary changed while the sweep ran; run it again")
        try:
            rows = run_rows(exp, run, summary)
        except KeyError as err:
            raise SweepError(f"{where}metrics: {err.args[0]}") from None
        path = folder / f"{run.run_id(exp)}.parquet"
        if not path.exists():
            _write_atomic(lambda tmp, rows=rows: write_parquet(rows, tmp), path)
        frames.append(rows)
    wanted = {run.run_id(exp) for run in runs}
    for old in folder.glob("*.parquet"):  # rows of an earlier version of the experiment
        if old.stem not in wanted:
            old.unlink()
    data = pd.concat(frames, ignore_index=True).sort_values(["arm", "replication", "metric"], kind="mergesort")
    data = data.reset_index(drop=True)
    _write_atomic(lambda tmp: summarize_sweep(data).to_csv(tmp, index=False), out / "summary.csv")
    return data


def _cached_summary(path: Path) -> dict | None:
    """A cached run summary; None if there is none, or (after saying so on stderr, and removing the file) if the file
    cannot be read as one: a file emptied or edited by hand is simulated again rather than stopping the sweep or
    feeding it rows."""
    if not path.exists():
        return None
    if not path.is_file():
        raise SweepError(f"{path}: a folder where a cached run summary belongs; remove it")
    try:
        data = path.read_bytes()
    except OSError as err:  # not ours to delete (permissions): say so
        raise SweepError(f"{path}: cannot read the cached run summary: {err.strerror or err}") from None
    try:
        summary = json.loads(data.decode("utf-8"))
        problem = None if isinstance(summary, dict) and isinstance(summary.get("requests"), dict) else \
            "not a run summary"
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        problem = str(err)
    if problem is None:
        return summary
    sys.stderr.write(f"fleetsim: warning: {path}: {problem}; simulating that run again\n")
    path.unlink()
    return None


def _metric_range(metric: str) -> tuple[float, float]:
    """The values a summary figure can take: [0, 1] for an attainment, utilisation or fraction, else >= 0 (counts,
    seconds, tokens, dollars, kWh)."""
    last = metric.rsplit(".", 1)[-1]
    if last in ("attainment", "utilisation", "kv_utilization") or "fraction" in last or last == "gpu_time_share":
        return 0.0, 1.0
    return 0.0, float("inf")


def summarize_sweep(data: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per arm and metric: replications, mean, standard deviation and the ``confidence`` interval of the mean
    (Student t with n - 1 degrees of freedom; NaN half-width for one replication), clipped to the values the figure
    can take (:func:`_metric_range`: an attainment's interval never passes 1). NaN values (a figure a run did not
    reach, e.g. no finished request) are left out and counted in ``missing``."""
    if isinstance(confidence, bool) or not isinstance(confidence, float | int) or not 0 < confidence < 1:
        raise SweepError(f"confidence {confidence!r}: must be a number between 0 and 1 (e.g. 0.95)")
    rows = []
    for (arm, label, metric), group in data.groupby(["arm", "arm_label", "metric"], sort=True):
        values = group["value"].to_numpy(dtype=float)
        ok = values[~np.isnan(values)]
        n = len(ok)
        mean = float(ok.mean()) if n else float("nan")
        sd = float(ok.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
        low, high = _metric_range(metric)
        rows.append({"arm": arm, "arm_label": label, "metric": metric, "n": n, "missing": len(values) - n,
                     "mean": mean, "std": sd, "ci_low": max(mean - half, low), "ci_high": min(mean + half, high),
                     "params": group["params"].iloc[0]})
    return pd.DataFrame(rows)

"""Autoscaler tuning (sim/tune): the search finds the known optimum of a small problem, the Pareto front, the ready
scenario file, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from sim.scenario import load_scenario
from sim.simulate import simulate
from sim.sweep import SweepError
from sim.sweep.expand import replication_seeds
from sim.tune import evaluate, load_study, pareto_front, run_study, write_results
from tests.conftest import ROOT

BASE = {
    "name": "tiny-tune",
    "workload": {"type": "open_loop", "arrival": {"process": "poisson", "rate_per_s": 30.0}, "num_requests": 300,
                 "prompt_tokens": {"dist": "uniform", "low": 50, "high": 200},
                 "output_tokens": {"dist": "uniform", "low": 5, "high": 40}},
    "pools": {"p": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "replicas": 1, "engine": {"max_model_len": 4096,
                                                                                              "max_num_seqs": 4},
                    "perf": {"model": "constant", "step_s": 0.02}, "price": {"usd_per_gpu_hour": 1.0}}},
    "slo": {"ttft_s": 0.5},
}


def write_study(tmp_path, **fields):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE), encoding="utf-8")
    data = {"name": "t", "scenario": "base.yaml", "search": {"pools.p.replicas": {"integer": [1, 8]}},
            "objective": {"minimize": "cost.usd_total", "constraints": [{"metric": "slo.attainment", "min": 0.95}]},
            "trials": 16, **fields}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("sampler", ["sobol", "tpe"])
def test_the_search_finds_the_known_optimum(tmp_path, sampler):
    if sampler == "tpe":
        pytest.importorskip("optuna")
    study = load_study(write_study(tmp_path, sampler=sampler))
    seeds = replication_seeds(0, 1)
    # The optimum by exhaustive search: the fewest replicas (cheapest) that meet 95% attainment.
    exhaustive = {n: evaluate(study, {"pools.p.replicas": n}, seeds) for n in range(1, 9)}
    feasible = [n for n, f in exhaustive.items() if f["slo.attainment"] >= 0.95]
    best_n = min(feasible, key=lambda n: exhaustive[n]["cost.usd_total"])
    assert 1 < best_n < 8  # the problem is not trivial at either end
    table = run_study(study, progress=False)
    assert table.attrs["sampler"] == sampler and len(table) == 16
    result = write_results(study, table, tmp_path / "out")
    assert result["best"]["values"] == {"pools.p.replicas": best_n}
    assert result["best"]["cost.usd_total"] == pytest.approx(exhaustive[best_n]["cost.usd_total"])
    # The ready scenario file runs and gives the trial's figures.
    best = load_scenario(tmp_path / "out" / "best_scenario.yaml")
    assert best.pools["p"].replicas == best_n
    assert simulate(best).summary["cost"]["usd_total"] == pytest.approx(exhaustive[best_n]["cost.usd_total"])


def test_pareto_front_keeps_the_non_dominated_trials():
    table = pd.DataFrame({"cost": [1.0, 2.0, 2.5, 3.0, 1.5, 4.0], "att": [0.80, 0.90, 0.85, 0.99, 0.80, 0.99]})
    front = pareto_front(table, "cost", "att", higher_is_better=True)
    assert front.index.tolist() == [0, 1, 3]
    assert pareto_front(table, "cost", "att", higher_is_better=False).index.tolist() == [0]


def test_no_feasible_trial_writes_no_scenario(tmp_path):
    path = write_study(tmp_path, trials=3, sampler="sobol",
                       objective={"minimize": "cost.usd_total",
                                  "constraints": [{"metric": "slo.attainment", "min": 1.5}]})
    study = load_study(path)
    result = write_results(study, run_study(study, progress=False), tmp_path / "out")
    assert result["best"] is None and not (tmp_path / "out" / "best_scenario.yaml").exists()
    proc = subprocess.run([sys.executable, "-m", "sim", "tune", str(path), "--out", str(tmp_path / "o"), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1 and "no trial met the constraints" in proc.stdout


@pytest.mark.parametrize(("fields", "message"), [
    ({"search": {}}, "search: .*at least 1"),
    ({"search": {"pools.p.replicas": {"integer": [1, 3], "uniform": [0, 1]}}}, "exactly one of"),
    ({"search": {"pools.p.replicas": {"integer": [-2, 3]}}}, "pools.p.replicas"),
    ({"objective": {"constraints": [{"metric": "slo.attainment"}]}}, "give min and/or max"),
    ({"sampler": "cma"}, "sampler: .*'auto', 'tpe' or 'sobol'"),
])
def test_bad_studies_name_the_file_and_field(tmp_path, fields, message):
    with pytest.raises(SweepError, match=message):
        load_study(write_study(tmp_path, **fields))


def test_cli_tune_prints_the_front_and_the_best(tmp_path):
    path = write_study(tmp_path, trials=8, sampler="sobol")
    proc = subprocess.run([sys.executable, "-m", "sim", "tune", str(path), "--out", str(tmp_path / "o"), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Pareto front" in proc.stdout and "best: trial" in proc.stdout
    assert (tmp_path / "o" / "trials.csv").exists() and (tmp_path / "o" / "pareto.csv").exists()


def test_feasible_trials_without_an_objective_value_are_said_so(tmp_path):
    """With no constraints every trial is feasible; an objective that no run could fill (no request finished: every
    prompt is longer than max_model_len) is named as the reason no trial is best."""
    path = write_study(tmp_path, trials=2, sampler="sobol", set={"pools.p.engine.max_model_len": 10},
                       objective={"minimize": "ttft_s.p50"})
    proc = subprocess.run([sys.executable, "-m", "sim", "tune", str(path), "--out", str(tmp_path / "o"), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "no feasible trial has a value of ttft_s.p50" in proc.stdout and "constraints" not in proc.stdout

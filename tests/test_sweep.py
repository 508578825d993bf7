"""Sweeps (sim/sweep): expansion, common random numbers, resume after a kill, Ray equal to local, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.config import Scenario
from sim.simulate import simulate
from sim.sweep import Experiment, SweepError, expand, load_experiment, replication_seeds, run_sweep, summarize_sweep
from tests.conftest import ROOT

QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def write_experiment(tmp_path: Path, **fields) -> Path:
    data = {"name": "t", "scenario": str(QUICKSTART), "set": {"workload.num_requests": 40}, **fields}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_grid_zip_random_and_variants_multiply():
    exp = Experiment.model_validate({
        "scenario": "x.yaml",
        "parameters": {
            "grid": {"a": [1, 2, 3], "b": ["x", "y"]},
            "zip": {"c": [1, 2], "d": [10, 20]},
            "random": {"samples": 4, "parameters": {"e": {"uniform": [0, 1]}, "f": {"integer": [1, 3]},
                                                     "g": {"loguniform": [1, 100]}, "h": {"choice": ["p", "q"]}}},
            "variants": [{"name": "v1", "set": {"z": 1}}, {"name": "v2", "set": {"z": 2}}],
        },
    })
    arms = expand(exp)
    assert len(arms) == 2 * (3 * 2) * 2 * 4
    assert [a.index for a in arms] == list(range(len(arms)))
    first = arms[0].values
    assert first["z"] == 1 and first["a"] == 1 and first["b"] == "x" and (first["c"], first["d"]) == (1, 10)
    assert {(a.values["c"], a.values["d"]) for a in arms} == {(1, 10), (2, 20)}  # zipped, not crossed
    for a in arms:
        assert 0 <= a.values["e"] <= 1 and a.values["f"] in (1, 2, 3) and 1 <= a.values["g"] <= 100
        assert a.values["h"] in ("p", "q")
    assert [a.values for a in expand(exp)] == [a.values for a in arms]  # the same file gives the same arms
    assert len(expand(Experiment.model_validate({"scenario": "x.yaml"}))) == 1


def test_replication_seeds_are_spawned_and_stable():
    seeds = replication_seeds(7, 5)
    assert seeds == replication_seeds(7, 5) and len(set(seeds)) == 5
    assert replication_seeds(7, 3) == seeds[:3]  # more replications keep the first ones
    assert all(0 <= s < 2**63 for s in seeds)


def test_arms_share_arrivals_and_lengths_common_random_numbers(tmp_path):
    path = write_experiment(tmp_path, parameters={"grid": {"router.policy": ["round_robin", "least_outstanding"]}},
                            replications=2)
    _, runs = load_experiment(path)
    assert len(runs) == 4
    frames = {(r.arm.index, r.replication): simulate(Scenario.model_validate_json(r.scenario_json)).requests
              for r in runs}
    for rep in (0, 1):
        a, b = frames[(0, rep)], frames[(1, rep)]
        for column in ("arrival_s", "prompt_tokens", "output_tokens"):
            np.testing.assert_array_equal(a[column], b[column])
        assert not a["replica_id"].equals(b["replica_id"])  # the policy differs
    assert not np.array_equal(frames[(0, 0)]["arrival_s"], frames[(0, 1)]["arrival_s"])


def test_dataset_rows_summary_and_resume(tmp_path):
    path = write_experiment(tmp_path, parameters={"zip": {"workload.arrival.rate_per_s": [4.0, 8.0]}},
                            replications=3, metrics=["ttft_s.p99", "slo.attainment", "pools.h100.ttft_s.p50"])
    exp, runs = load_experiment(path)
    out = tmp_path / "out"
    data = run_sweep(exp, runs, out, progress=False)
    assert len(data) == 2 * 3 * 3
    assert set(data.columns) >= {"run_id", "arm", "arm_label", "params", "replication", "seed", "metric", "value",
                                 "scenario"}
    assert sorted(p.stem for p in (out / "runs").glob("*.parquet")) == sorted(r.run_id(exp) for r in runs)
    assert sorted(p.stem for p in (out / "cache").glob("*.json")) == sorted(r.scenario_id for r in runs)
    # Each row's scenario is the run's resolved scenario: re-simulating it gives the same figure.
    row = data[(data["metric"] == "ttft_s.p99")].iloc[0]
    assert simulate(Scenario.model_validate_json(row["scenario"])).summary["ttft_s"]["p99"] == row["value"]
    summary = summarize_sweep(data)
    s = summary[(summary["arm"] == 0) & (summary["metric"] == "ttft_s.p99")].iloc[0]
    values = data[(data["arm"] == 0) & (data["metric"] == "ttft_s.p99")]["value"].to_numpy()
    half = 4.302652729911275 * values.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert s["mean"] == pytest.approx(values.mean()) and s["ci_high"] - s["mean"] == pytest.approx(half)
    assert pd.read_csv(out / "summary.csv").shape[0] == len(summary)
    # Re-running skips every finished run.
    seen = []
    again = run_sweep(exp, runs, out, progress=False, on_run=seen.append)
    assert seen == [] and again.equals(data)


def test_ray_and_local_give_identical_results(tmp_path):
    pytest.importorskip("ray")
    path = write_experiment(tmp_path, parameters={"grid": {"router.policy": ["round_robin", "power_of_two"]}},
                            replications=2)
    exp, runs = load_experiment(path)
    local = run_sweep(exp, runs, tmp_path / "local", backend="local", workers=2, progress=False)
    ray = run_sweep(exp, runs, tmp_path / "ray", backend="ray", workers=2, progress=False)
    pd.testing.assert_frame_equal(local, ray)


def test_a_killed_sweep_resumes_to_the_same_results(tmp_path):
    """SIGKILL the sweep (its whole process group) once some runs are written; a re-run finishes the rest and the
    dataset equals an uninterrupted sweep's."""
    path = write_experiment(tmp_path, set={"workload.num_requests": 1000},
                            parameters={"grid": {"workload.arrival.rate_per_s": [2.0, 4.0, 6.0, 8.0]}},
                            replications=3)
    exp, runs = load_experiment(path)
    reference = run_sweep(exp, runs, tmp_path / "reference", workers=2, progress=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sim", "sweep", str(path), "--workers", "2", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "cache").glob("*.json"))) < 3:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = list((out / "cache").glob("*.json"))
    assert 3 <= len(written) < len(runs), "the sweep should have been killed part-way"
    for part in written:
        json.loads(part.read_text())  # every file left behind is whole
    resumed = []
    data = run_sweep(exp, runs, out, progress=False, on_run=resumed.append)
    assert len(resumed) == len(runs) - len(written)
    pd.testing.assert_frame_equal(data, reference)


def test_a_sweep_killed_at_random_moments_resumes_to_the_same_results(tmp_path):
    """SIGKILL the sweep's process group at random moments (seeded: during start-up, simulations, cache writes or the
    dataset's), again and again; the sweep run to the end afterwards writes the same dataset and summary.csv as an
    uninterrupted one, and nothing half-written is left behind."""
    path = write_experiment(tmp_path, set={"workload.num_requests": 400},
                            parameters={"grid": {"workload.arrival.rate_per_s": [2.0, 4.0, 6.0, 8.0]}},
                            replications=3)
    cmd = [sys.executable, "-m", "sim", "sweep", str(path), "--workers", "2", "--quiet", "--out"]
    subprocess.run([*cmd, str(tmp_path / "reference")], cwd=ROOT, check=True, capture_output=True)
    out = tmp_path / "killed"
    rng = np.random.default_rng(20261201)

    def cached() -> int:
        return len(list((out / "cache").glob("*.json")))

    # Each kill comes a random moment after a random number of simulations are cached (so the kills fall across
    # the whole sweep however fast this machine is), the first during start-up.
    cached_at_kills = []
    for attempt in range(8):
        proc = subprocess.Popen([*cmd, str(out)], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if attempt == 1:  # one kill sure to fall between two simulations, however fast this machine runs them
            target, delay = int(rng.integers(min(cached() + 1, 10), 11)), 0.0
        else:
            target, delay = 0 if attempt == 0 else int(rng.integers(cached(), 13)), float(rng.uniform(0.0, 0.4))
        deadline = time.monotonic() + 120
        while proc.poll() is None and cached() < target and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            cached_at_kills.append(cached())
        if (out / "summary.csv").exists():
            break
    # Killed more than once, at least once with some simulations cached and others not.
    assert len(cached_at_kills) >= 2 and any(0 < n < 12 for n in cached_at_kills), cached_at_kills
    for part in (out / "cache").glob("*.json"):
        json.loads(part.read_text())  # every file left behind is whole
    subprocess.run([*cmd, str(out)], cwd=ROOT, check=True, capture_output=True)
    assert not list(out.rglob("*.tmp"))
    reference = pd.read_parquet(tmp_path / "reference" / "runs")
    resumed = pd.read_parquet(out / "runs")
    keys = ["arm", "replication", "metric"]
    pd.testing.assert_frame_equal(resumed.sort_values(keys, ignore_index=True),
                                  reference.sort_values(keys, ignore_index=True))
    assert (out / "summary.csv").read_text() == (tmp_path / "reference" / "summary.csv").read_text()


@pytest.mark.parametrize(("fields", "message"), [
    ({"parameters": {"zip": {"a": [1, 2], "b": [1]}}}, "exp.yaml: parameters.zip: lists of different lengths"),
    ({"replications": 0}, "replications: .*greater than or equal to 1"),
    ({"parameters": {"random": {"samples": 2, "parameters": {"a": {"uniform": [2, 1]}}}}}, "low 2.0 is above high"),
    ({"parameters": {"grid": {"router.policy": ["nope"]}}}, "arm 'router.policy=nope'.*router.policy: unknown router"),
    ({"parameters": {"grid": {"pools.l4.replicas": [-1]}}}, "arm 'pools.l4.replicas=-1'.*pools.l4.replicas"),
    ({"scenario": "missing.yaml"}, "scenario: file not found: missing.yaml"),
    ({"colour": "red"}, "colour: unknown field; allowed: name, scenario, set, parameters, replications"),
])
def test_bad_experiments_name_the_file_and_field(tmp_path, fields, message):
    path = write_experiment(tmp_path, **fields)
    with pytest.raises(SweepError, match=message):
        load_experiment(path)


def test_an_unknown_metric_stops_the_sweep_naming_it(tmp_path):
    exp, runs = load_experiment(write_experiment(tmp_path, metrics=["ttft_s.p42"]))
    with pytest.raises(SweepError, match=r"metrics: metric 'ttft_s\.p42': no 'p42' in the run's summary; there: mean"):
        run_sweep(exp, runs, tmp_path / "out", progress=False)


def test_cli_sweep_prints_the_arms_and_writes_the_dataset(tmp_path):
    path = write_experiment(tmp_path, parameters={"grid": {"router.policy": ["round_robin", "least_outstanding"]}},
                            replications=2, metrics=["ttft_s.p99", "slo.attainment"])
    proc = subprocess.run([sys.executable, "-m", "sim", "sweep", str(path), "--out", str(tmp_path / "o"), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "router.policy=least_outstanding" in proc.stdout and "±" in proc.stdout
    assert len(pd.read_parquet(tmp_path / "o" / "runs")) == 2 * 2 * 2
    bad = subprocess.run([sys.executable, "-m", "sim", "sweep", str(path), "--workers", "0"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("fleetsim: error: --workers 0")
    assert "Traceback" not in bad.stderr


def test_changing_the_experiment_rebuilds_the_dataset_from_the_cache(tmp_path):
    """A re-run into the same folder after changing the metrics simulates nothing again and shows only the new
    metrics; arms that resolve to one scenario share one simulation and both appear."""
    out = tmp_path / "out"
    variants = [{"name": "as-is", "set": {}}, {"name": "lo", "set": {"router.policy": "least_outstanding"}}]
    exp, runs = load_experiment(write_experiment(tmp_path, parameters={"variants": variants}, replications=2,
                                                 metrics=["ttft_s.p50"]))
    simulated = []
    data = run_sweep(exp, runs, out, progress=False, on_run=simulated.append)
    assert len(simulated) == 2  # the quick start already routes by least_outstanding: 2 scenarios, 4 runs
    assert sorted(set(data["arm_label"])) == ["as-is", "lo"] and len(data) == 4
    exp2, runs2 = load_experiment(write_experiment(tmp_path, parameters={"variants": variants}, replications=2,
                                                   metrics=["ttft_s.p99", "slo.attainment"]))
    again = []
    data2 = run_sweep(exp2, runs2, out, progress=False, on_run=again.append)
    assert again == [] and set(data2["metric"]) == {"ttft_s.p99", "slo.attainment"} and len(data2) == 8
    assert set(pd.read_parquet(out / "runs")["metric"]) == {"ttft_s.p99", "slo.attainment"}
    assert set(pd.read_csv(out / "summary.csv")["metric"]) == {"ttft_s.p99", "slo.attainment"}


def test_duplicate_metrics_and_unreachable_ray_addresses_are_errors(tmp_path):
    with pytest.raises(SweepError, match=r"metrics: .*listed more than once"):
        load_experiment(write_experiment(tmp_path, metrics=["ttft_s.p50", "ttft_s.p50"]))
    pytest.importorskip("ray")
    exp, runs = load_experiment(write_experiment(tmp_path))
    with pytest.raises(SweepError, match=r"--address 127\.0\.0\.1:1: no Ray cluster answers there"):
        run_sweep(exp, runs, tmp_path / "o", backend="ray", address="127.0.0.1:1", progress=False)


def test_paths_in_an_experiment_are_relative_to_it(tmp_path):
    """A trace named in the experiment's set is found next to the experiment file, not next to the scenario."""
    import shutil

    sub = tmp_path / "sub"
    sub.mkdir()
    trace = ROOT / "data" / "traces" / "azure-2023" / "AzureLLMInferenceTrace_code.csv"
    shutil.copyfile(trace, sub / "t.csv")
    data = {"name": "t", "scenario": str(ROOT / "configs" / "azure_code_hpa_l4.yaml"),
            "set": {"workload.path": "t.csv", "workload.duration_s": 60}, "metrics": ["ttft_s.p50"]}
    path = sub / "exp.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    _, runs = load_experiment(path)
    assert Scenario.model_validate_json(runs[0].scenario_json).workload.path == str((sub / "t.csv").resolve())
    data["set"]["workload.path"] = "missing.csv"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SweepError, match=r"workload\.path: .*trace file not found: .*sub/missing\.csv"):
        load_experiment(path)


def test_confidence_intervals_stay_within_what_a_figure_can_take():
    """An attainment near 1 over few replications: Student t would pass 1; the interval stops there (and at 0)."""
    import pandas as pd

    from sim.sweep.runner import summarize_sweep

    rows = [{"arm": 0, "arm_label": "a", "metric": metric, "value": v, "params": "{}"}
            for metric, values in (("slo.attainment", (1.0, 0.95, 1.0)), ("ttft_s.p99", (0.1, 2.0, 0.1)))
            for v in values]
    summary = summarize_sweep(pd.DataFrame(rows)).set_index("metric")
    assert summary.loc["slo.attainment", "ci_high"] == 1.0 and summary.loc["slo.attainment", "ci_low"] < 0.95
    assert summary.loc["ttft_s.p99", "ci_low"] == 0.0 and summary.loc["ttft_s.p99", "ci_high"] > 2.0

"""The ``fleetsim`` command: run, validate and catalog, the files ``--out`` writes, and the entry points."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim import load_scenario
from sim.cli import main

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
SMALL = ("--set", "workload.num_requests=200")

OUT_FILES = {"requests.parquet", "timeseries.parquet", "cost_by_hour.parquet", "replicas.parquet", "summary.json",
             "scenario.yaml"}
REQUEST_COLUMNS = ["request_id", "arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens", "pool",
                   "gpu_type", "replica_id", "status", "preemptions", "queue_s", "ttft_s", "tpot_s", "e2e_s"]


def fleetsim(*argv) -> tuple[int, str, str]:
    """Run ``fleetsim ARGV`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def run_to(out: Path, *argv) -> dict:
    """``fleetsim run QUICKSTART --quiet --out OUT`` with 200 requests plus ``argv``; the summary it wrote."""
    rc, _, err = fleetsim("run", QUICKSTART, "--quiet", *SMALL, "--out", out, *argv)
    assert (rc, err) == (0, "")
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """One small quickstart run: (stdout, out folder)."""
    out = tmp_path_factory.mktemp("quickstart") / "results"
    rc, stdout, err = fleetsim("run", QUICKSTART, "--quiet", *SMALL, "--out", out)
    assert (rc, err) == (0, "")
    return stdout, out


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of the per-pool table: the lines between the dashes under the header and the next blank line."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("----")) + 1
    end = lines.index("", start)
    return [line.split() for line in lines[start:end]]


def test_run_prints_one_row_per_pool_and_all(quickstart_run):
    stdout, out = quickstart_run
    assert stdout.startswith("scenario 'quickstart', seed 0: ")
    assert "requests: 200 arrived, " in stdout
    rows = table_rows(stdout)
    assert [r[0] for r in rows] == ["l4", "h100", "all"]
    # done and rejected columns: the pools add up to the total.
    assert sum(int(r[1]) for r in rows[:-1]) == int(rows[-1][1])
    assert f"results written to {out}/" in stdout


def test_run_writes_the_out_folder(quickstart_run):
    _, out = quickstart_run
    assert {p.name for p in out.iterdir()} >= OUT_FILES


def test_summary_json_fields(quickstart_run):
    _, out = quickstart_run
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert set(s["requests"]) >= {"arrived", "finished", "rejected", "in_flight"}
    assert s["requests"]["arrived"] == 200
    for metric in ("ttft_s", "tpot_s", "e2e_s", "queue_s"):
        assert set(s[metric]) >= {"mean", "p50", "p90", "p99"}, metric
        assert s[metric]["p50"] <= s[metric]["p90"] <= s[metric]["p99"], metric
    assert set(s["throughput"]) >= {"requests_per_s", "output_tokens_per_s"}
    assert 0 <= s["slo"]["attainment"] <= 1
    assert set(s["cost"]) >= {"usd_total", "usd_per_hour", "usd_per_million_output_tokens"}
    assert s["cost"]["usd_total"] > 0
    assert s["energy_kwh"] > 0
    assert set(s["pools"]) == {"l4", "h100"}


def test_requests_parquet_columns(quickstart_run):
    _, out = quickstart_run
    df = pd.read_parquet(out / "requests.parquet")
    assert set(REQUEST_COLUMNS) <= set(df.columns), sorted(set(REQUEST_COLUMNS) - set(df.columns))
    assert len(df) == 200
    assert df["request_id"].is_unique
    assert set(df["pool"].astype(str)) <= {"l4", "h100"}
    assert set(df["gpu_type"].astype(str)) <= {"l4", "h100_sxm"}


def test_written_scenario_reloads_and_reruns_identically(quickstart_run, tmp_path):
    _, out = quickstart_run
    written = load_scenario(out / "scenario.yaml")
    assert written == load_scenario(QUICKSTART, [SMALL[1]])
    rc, _, err = fleetsim("run", out / "scenario.yaml", "--quiet", "--out", tmp_path)
    assert (rc, err) == (0, "")
    first = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    again = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert again == first


def test_set_override_changes_replicas(quickstart_run, tmp_path):
    _, out = quickstart_run
    before = pd.read_parquet(out / "replicas.parquet")
    assert (before["pool"].astype(str) == "l4").sum() == 2
    run_to(tmp_path, "--set", "pools.l4.replicas=1")
    after = pd.read_parquet(tmp_path / "replicas.parquet")
    assert (after["pool"].astype(str) == "l4").sum() == 1
    assert (after["pool"].astype(str) == "h100").sum() == 1


def test_seed_changes_results(quickstart_run, tmp_path):
    _, out = quickstart_run
    base = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    other = run_to(tmp_path, "--seed", "1")
    assert (base["seed"], other["seed"]) == (0, 1)
    assert other["ttft_s"] != base["ttft_s"]
    a = pd.read_parquet(out / "requests.parquet")
    b = pd.read_parquet(tmp_path / "requests.parquet")
    assert not a["arrival_s"].equals(b["arrival_s"])


def test_validate_prints_resolved_scenario_and_deployment():
    rc, out, err = fleetsim("validate", QUICKSTART, "--set", "pools.h100.replicas=2")
    assert (rc, err) == (0, "")
    resolved = yaml.safe_load(out)  # the deployment lines are YAML comments
    assert resolved == load_scenario(QUICKSTART, ["pools.h100.replicas=2"]).model_dump(mode="json", by_alias=True)
    assert resolved["pools"]["l4"]["engine"]["gpu_memory_utilization"] == 0.9  # defaults filled in
    assert resolved["pools"]["h100"]["replicas"] == 2
    lines = out.splitlines()
    at = lines.index("# deployment")
    deployment = lines[at + 1:]
    assert len(deployment) == 2
    assert deployment[0].startswith("#   l4: 2 x (1 x NVIDIA L4), Llama-3.1-8B fp8")
    assert deployment[1].startswith("#   h100: 2 x (1 x NVIDIA H100")
    for line in deployment:
        assert "KV cache" in line and "max_model_len 8192" in line and "/GPU-h" in line


@pytest.mark.parametrize(("what", "expected"), [
    ("gpus", ["L4", "L40S", "H100 SXM", "H100 PCIe", "H200", "A100", "T4"]),
    ("models", ["Llama-2-7B", "Llama-2-13B", "Llama-3.1-8B", "Llama-3.1-70B", "Qwen3-32B"]),
    ("prices", ["l4", "h100_sxm", "aws", "on_demand", "usd_per_gpu_hour"]),
    ("engines", ["vllm_v1", "vllm_v0", "trtllm", "sglang", "tgi", "triton", "ollama", "no_evict", "prefill_first",
                 "static", "gpu_time_scale"]),
])
def test_catalog_lists(what, expected):
    rc, out, err = fleetsim("catalog", what)
    assert (rc, err) == (0, "")
    for name in expected:
        assert name in out, name


def test_catalog_with_extra_file(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "models:\n  tiny-llama:\n    name: Tiny-Llama-Test\n    n_layers: 4\n    hidden_size: 256\n"
        "    n_heads: 8\n    n_kv_heads: 2\n    head_dim: 32\n    intermediate_size: 1024\n"
        "    vocab_size: 1000\n    max_context_tokens: 2048\n", encoding="utf-8")
    rc, out, err = fleetsim("catalog", "models", "--file", extra)
    assert (rc, err) == (0, "")
    assert "Tiny-Llama-Test" in out and "Llama-2-7B" in out


def test_entry_points(tmp_path):
    """The installed console script and ``python -m sim`` both run; bad input exits 2 with one stderr line."""
    script = Path(sys.executable).with_name("fleetsim")
    assert script.exists(), "run `pip install -e .` to install the fleetsim console script"
    for cmd in ([str(script), "--help"], [sys.executable, "-m", "sim", "--help"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: fleetsim")
        assert "run" in done.stdout and "validate" in done.stdout and "catalog" in done.stdout
    missing = tmp_path / "nope.yaml"
    done = subprocess.run([str(script), "validate", str(missing)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    assert done.stderr == f"fleetsim: error: {missing}: file not found\n"
    assert done.stdout == ""


def test_seed_option_is_written_into_the_scenario(quickstart_run, tmp_path):
    """``--seed 7`` runs seed 7, and the scenario.yaml written beside the results re-runs it exactly."""
    first = run_to(tmp_path / "a", "--seed", "7")
    assert first["seed"] == 7
    assert load_scenario(tmp_path / "a" / "scenario.yaml").seed == 7
    rc, _, err = fleetsim("run", tmp_path / "a" / "scenario.yaml", "--quiet", "--out", tmp_path / "b")
    assert (rc, err) == (0, "")
    assert json.loads((tmp_path / "b" / "summary.json").read_text(encoding="utf-8")) == first


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("part-*.parquet"))


def test_reused_out_folder_keeps_no_stale_results(tmp_path):
    """A run into a folder an earlier run wrote leaves only its own results: a spilled run's part files and the
    single-file tables replace each other, and a shorter spilled run leaves none of a longer run's parts."""
    out = tmp_path / "out"
    spill = ("--set", "run.spill_after_requests=50")
    run_to(out, *spill, "--set", "workload.num_requests=400")
    assert not (out / "requests.parquet").exists()
    assert len(pd.read_parquet(out / "requests")) == 400
    # A longer run would have left more parts than the next one writes.
    shutil.copyfile(out / "requests" / "part-00000.parquet", out / "requests" / "part-00007.parquet")
    run_to(out, *spill, "--set", "workload.num_requests=120")
    assert _parts(out / "requests") == ["part-00000.parquet"]
    assert len(pd.read_parquet(out / "requests")) == 120
    run_to(out)  # in memory: requests.parquet, and the spilled folders go
    assert len(pd.read_parquet(out / "requests.parquet")) == 200
    assert not (out / "requests").exists() and not (out / "timeseries").exists()
    run_to(out, *spill)
    assert not (out / "requests.parquet").exists() and len(pd.read_parquet(out / "requests")) == 200


def test_spilled_parts_copied_over_an_earlier_runs_parts(tmp_path):
    """Parts spilled to a temporary folder, then copied into an --out that has more parts from before."""
    from sim import simulate
    from sim.cli import write_results

    scenario = load_scenario(QUICKSTART, ["workload.num_requests=400", "run.spill_after_requests=50"])
    write_results(simulate(scenario), tmp_path)
    shutil.copyfile(tmp_path / "requests" / "part-00000.parquet", tmp_path / "requests" / "part-00007.parquet")
    small = load_scenario(QUICKSTART, ["workload.num_requests=120", "run.spill_after_requests=50"])
    write_results(simulate(small, spill_dir=tmp_path / "elsewhere"), tmp_path)
    assert len(pd.read_parquet(tmp_path / "requests")) == 120


def test_output_paths_are_checked_before_the_work(tmp_path):
    """A file in the way of an output path is reported before anything runs, naming the option."""
    taken = tmp_path / "taken"
    taken.write_text("x", encoding="utf-8")
    rc, out, err = fleetsim("run", QUICKSTART, "--quiet", *SMALL, "--out", taken / "sub")
    assert (rc, out) == (2, "")
    assert err == f"fleetsim: error: --out {taken / 'sub'}: cannot create the folder: {taken} is a file\n"
    results = tmp_path / "results"
    run_to(results)
    rc, out, err = fleetsim("report", results, "--html", taken / "r.html")
    assert (rc, out) == (2, "")
    assert err == f"fleetsim: error: --html {taken / 'r.html'}: cannot create its folder: {taken} is a file\n"
    rc, _, err = fleetsim("report", results, "--html", tmp_path / "r.html", "--png", taken)
    assert (rc, err) == (2, f"fleetsim: error: --png {taken}: exists and is not a folder\n")
    assert not (tmp_path / "r.html").exists()


def test_a_reader_that_goes_away_loses_no_results(tmp_path):
    """``fleetsim run ... | head -1``: no traceback, the 128 + SIGPIPE status, and the results are written."""
    script = Path(sys.executable).with_name("fleetsim")
    with subprocess.Popen([str(script), "run", str(QUICKSTART), "--quiet", *SMALL, "--out", str(tmp_path / "r")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()  # as head does once it has its lines
        err = proc.stderr.read().decode()
        rc = proc.wait(timeout=120)
    assert "Traceback" not in err and err == ""
    assert rc == 141
    assert json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))["requests"]["arrived"] == 200


def test_cross_field_error_names_the_overrides(capsys):
    rc, _, err = fleetsim("validate", QUICKSTART, "--set", "pools.l4.replicas=0", "--set", "pools.h100.replicas=0")
    assert rc == 2
    assert err.startswith(f"fleetsim: error: {QUICKSTART}: pools: every pool has 0 replicas")
    assert err.endswith("(with --set pools.l4.replicas=0, --set pools.h100.replicas=0)\n")


def test_set_text_that_looks_like_a_number():
    """``--set name=123`` reads a number, and the error says how to write text; quoted, it is text."""
    rc, _, err = fleetsim("validate", QUICKSTART, "--set", "name=123")
    assert rc == 2
    assert err == ("fleetsim: error: --set name=123: name: Input should be a valid string, got 123 (--set values are "
                   "read as YAML; for text, quote it: --set 'name=\"123\"')\n")
    rc, out, err = fleetsim("validate", QUICKSTART, "--set", 'name="123"')
    assert (rc, err) == (0, "")
    assert out.startswith("name: '123'\n")


def test_a_perf_setting_without_the_model_refines_the_kernel_model():
    """``--set pools.X.perf.calibrated=false`` on a pool with no perf block means the default (kernel) model with
    that setting; a field the kernel model lacks is named as such."""
    sc = load_scenario(QUICKSTART, ["pools.h100.perf.calibrated=false"])
    assert (sc.pools["h100"].perf.model, sc.pools["h100"].perf.calibrated) == ("kernel", False)
    assert sc.pools["l4"].perf.calibrated
    rc, _, err = fleetsim("validate", QUICKSTART, "--set", "pools.h100.perf.step_s=0.01")
    assert rc == 2 and "pools.h100.perf.kernel.step_s: unknown field" in err
    assert load_scenario(QUICKSTART, ["pools.h100.perf={model: constant, step_s: 0.01}"]).pools["h100"].perf.step_s \
        == 0.01


def test_a_clock_limit_that_cuts_the_run_is_pointed_out():
    rc, out, _ = fleetsim("run", QUICKSTART, "--quiet", "--set", "workload.num_requests=3000",
                          "--set", "run.max_duration_s=60")
    assert rc == 0
    note = next(line for line in out.splitlines() if line.startswith("note: "))
    assert "were still in flight at the clock limit (60.0 s)" in note and "judge only the finished" in note
    rc, out, _ = fleetsim("run", QUICKSTART, "--quiet", *SMALL)
    assert "note: " not in out

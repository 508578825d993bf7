"""Smoke tests of what ships beside the library: the notebook, the experiment script, the plot helpers."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib
import pytest

from sim import simulate
from sim.cli import write_results
from sim.plots import plot_cost_by_hour, plot_latency_cdf, plot_pool_timeseries
from tests.conftest import ROOT, scenario

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    res = simulate(scenario({"pools": {"p": {"replicas": 2}}, "workload": {"num_requests": 100}}), seed=0)
    out = tmp_path_factory.mktemp("results")
    write_results(res, out)
    return out, res


def test_plot_helpers_draw_on_the_given_axes(results_dir):
    import matplotlib.pyplot as plt

    _, res = results_dir
    fig, axes = plt.subplots(1, 3)
    assert plot_latency_cdf(res.requests, "ttft_s", ax=axes[0]) is axes[0]
    assert plot_pool_timeseries(res.timeseries, "running", ax=axes[1]) is axes[1]
    assert plot_cost_by_hour(res.cost_by_hour, ax=axes[2]) is axes[2]
    assert axes[0].lines and axes[1].lines and axes[2].patches
    plt.close(fig)


@pytest.mark.parametrize("name", ["capacity_review", "autoscaler_tuning", "trace_whatif"])
def test_notebooks_execute_on_small_sizes(results_dir, tmp_path, monkeypatch, name):
    """Each notebook runs top to bottom in a Jupyter kernel (nbclient) on small sizes; committed with outputs
    cleared."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    out, _ = results_dir
    monkeypatch.setenv("FLEETSIM_RESULTS", str(out))
    monkeypatch.setenv("FLEETSIM_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("FLEETSIM_OUT", str(tmp_path))
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    book = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    for cell in book.cells:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, "commit notebooks with outputs cleared"
            assert "def " not in cell["source"] and "class " not in cell["source"], "model logic belongs in sim/"
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for c in book.cells if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any(o["output_type"] in ("display_data", "execute_result") for o in outputs)


def test_compare_routers_experiment(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "compare_routers.py"), str(ROOT / "configs" / "quickstart.yaml"),
         "--replications", "2", "--set", "workload.num_requests=60", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "least_outstanding" in proc.stdout
    assert (tmp_path / "summary.csv").exists()


def test_vgpu_consolidation_experiment(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "vgpu_consolidation.py"), "--rates", "1,4",
         "--requests-per-vm", "40", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    import pandas as pd

    table = pd.read_csv(tmp_path / "consolidation.csv")
    assert sorted(set(table["vms"])) == [1, 2, 4] and len(table) == 6
    assert (tmp_path / "consolidation.png").exists()
    # More VMs on the one GPU: each VM's steps are slower at the same load per VM.
    tpot = table[table["rate_per_vm"] == 1].set_index("vms")["tpot_mean_s"]
    assert tpot[1] < tpot[2] < tpot[4]


def test_every_shipped_config_validates(capsys):
    from sim.cli import main

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert main(["validate", str(path)]) == 0, path
    capsys.readouterr()


@pytest.mark.parametrize(("script", "args", "expect"), [
    ("compare_engines.py", ["--rates", "5", "--requests", "40"], "sglang"),
    ("disaggregation.py", ["--rates", "2", "--requests", "60"], "P:D 2:2"),
])
def test_engine_and_disaggregation_experiments(tmp_path, script, args, expect):
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert expect in proc.stdout
    assert list(tmp_path.glob("*.csv"))


def test_plot_sweep_metric_draws_one_line_per_setting_of_the_rest():
    """Against x, one line per setting of the other parameters (and variant); a single line when x is all that
    varies."""
    import json

    import matplotlib.pyplot as plt
    import pandas as pd

    from sim.plots import plot_sweep_metric

    def summary(arms):
        return pd.DataFrame([{"metric": "m", "params": json.dumps(params), "arm_label": label, "mean": float(i),
                              "ci_low": i - 0.5, "ci_high": i + 0.5} for i, (label, params) in enumerate(arms)])

    one = summary([(f"rate={r}", {"rate": r}) for r in (4, 8, 12)])
    ax = plot_sweep_metric(one, "m", "rate")
    assert len(ax.containers) == 1 and list(ax.containers[0].lines[0].get_xdata()) == [4, 8, 12]
    two = summary([(f"h100, rate={r}, router={p}", {"rate": r, "router": p}) for p in ("a", "b") for r in (4, 8)])
    ax = plot_sweep_metric(two, "m", "rate")
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["h100, router=a", "h100, router=b"]
    assert len(ax.containers) == 2 and all(len(c.lines[0].get_xdata()) == 2 for c in ax.containers)
    plt.close("all")


def test_the_speed_benchmark_runs_and_prints_its_figures():
    """``benchmarks/bench_speed.py`` on a small (a1): the table row names the requests, and the warm column appears
    with ``--in-process``."""
    out = subprocess.run([sys.executable, "benchmarks/bench_speed.py", "--only", "a1", "--repeat", "1",
                          "--requests", "300", "--in-process", "2"], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=300).stdout
    header, row, detail = out.strip().splitlines()
    assert "warm s" in header and row.split()[0] == "a1" and "300" in row.split()
    assert "arrived 300, finished 300" in detail


def test_the_speed_benchmarks_like_for_like_scenario_spills_and_c_does_not():
    """(cs) is (c) with its records spilled past 100,000, as (d) spills its own; (c) keeps them in memory."""
    runs = {}
    for name in ("c", "cs"):
        out = subprocess.run([sys.executable, "benchmarks/bench_speed.py", "--one", name, "--requests", "100001"],
                             cwd=ROOT, capture_output=True, text=True, check=True, timeout=300).stdout
        runs[name] = json.loads(out.strip().splitlines()[-1])
    assert runs["cs"]["spilled"] and not runs["c"]["spilled"]
    assert runs["c"]["counts"] == runs["cs"]["counts"] == {"arrived": 100001, "finished": 100001, "rejected": 0,
                                                          "in_flight": 0, "restarts": 0}

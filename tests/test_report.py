"""``fleetsim report``: a self-contained HTML report of a results folder, with user strings escaped; rendered in
headless Chromium where it is installed (``apt-get install chromium``; the test skips cleanly without it)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from sim import simulate
from sim.cli import write_results
from sim.plots import plot_replicas_over_time, plot_slo_attainment
from sim.report import ReportError, load_results, write_report
from tests.conftest import ROOT, scenario

matplotlib.use("Agg")
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    patch = {"name": HOSTILE, "pools": {"p": {"replicas": 2}}, "workload": {"num_requests": 200},
             "slo": {"ttft_s": 0.5},
             "classes": [{"name": "batch", "workload": {"type": "open_loop", "num_requests": 50,
                                                        "arrival": {"process": "poisson", "rate_per_s": 1.0},
                                                        "prompt_tokens": {"dist": "fixed", "tokens": 100},
                                                        "output_tokens": {"dist": "fixed", "tokens": 20}}}]}
    out = tmp_path_factory.mktemp("results")
    write_results(simulate(scenario(patch), seed=0), out)
    return out


def test_report_is_one_self_contained_file(results_dir, tmp_path):
    written = write_report(results_dir, tmp_path / "r.html", tmp_path / "png")
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 4  # latency per pool, per class, replicas and cost, SLO attainment
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG")
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    assert sorted(p.name for p in written[1:]) == ["latency_by_class.png", "latency_by_pool.png",
                                                   "replicas_and_cost.png", "slo_attainment.png"]
    assert "<td>p</td>" in text and "<td>all</td>" in text


def test_user_strings_are_escaped(results_dir, tmp_path):
    write_report(results_dir, tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert HOSTILE not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("<script") == 0


def test_plot_helpers_draw_on_the_given_axes(results_dir):
    res = load_results(results_dir)
    fig, axes = plt.subplots(1, 2)
    assert plot_replicas_over_time(res["replicas"], ax=axes[0]) is axes[0]
    assert plot_slo_attainment(res["summary"], ax=axes[1]) is axes[1]
    assert axes[0].collections and axes[1].patches
    labels = [t.get_text() for t in axes[1].get_yticklabels()]
    assert labels == ["pool p", "class default", "class batch", "all"]
    plt.close(fig)


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(ReportError, match="results folder not found"):
        load_results(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "summary.json").write_text("{}")
    with pytest.raises(ReportError, match=r"not a fleetsim results folder: missing scenario\.yaml"):
        load_results(tmp_path / "half")
    proc = subprocess.run([sys.executable, "-m", "sim", "report", str(tmp_path / "half"), "--html",
                           str(tmp_path / "x.html")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "missing" in proc.stderr


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(results_dir, tmp_path):
    write_report(results_dir, tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,1800",
         (tmp_path / "r.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    pixels = plt.imread(shot)
    assert pixels.shape[0] == 1800 and pixels.shape[1] == 1280
    # Not a blank page: the plots put many distinct colours on it.
    assert pixels[..., :3].std() > 0.05
    assert len(np.unique((pixels[..., :3] * 255).astype(int).reshape(-1, 3), axis=0)) > 50


@pytest.mark.parametrize(("summary", "scenario", "message"), [
    ("{}", "name: x", r"summary\.json: not a fleetsim run summary \(missing requests"),
    ("[1, 2]", "name: x", r"summary\.json: not a fleetsim run summary"),
    (None, "[1, 2]", r"scenario\.yaml: not a scenario mapping"),
])
def test_malformed_results_are_report_errors(results_dir, tmp_path, summary, scenario, message):
    bad = tmp_path / "bad"
    shutil.copytree(results_dir, bad)
    if summary is not None:
        (bad / "summary.json").write_text(summary)
    (bad / "scenario.yaml").write_text(scenario)
    with pytest.raises(ReportError, match=message):
        load_results(bad)


def test_a_latency_cdf_of_no_finished_request_says_so_without_warnings():
    import warnings

    import pandas as pd

    from sim.plots import plot_latency_cdf

    requests = pd.DataFrame({"status": ["rejected"], "pool": ["p"], "ttft_s": [float("nan")]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax = plot_latency_cdf(requests)
    assert [t.get_text() for t in ax.texts] == ["no finished requests"] and ax.get_legend() is None
    plt.close("all")


def test_plots_of_empty_tables_or_unknown_pools_say_so_without_warnings():
    import warnings

    from sim import simulate
    from sim.plots import plot_cost_by_hour, plot_pool_timeseries, plot_replicas_over_time
    from tests.conftest import scenario

    res = simulate(scenario())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        axes = [plot_pool_timeseries(res.timeseries.iloc[:0]), plot_cost_by_hour(res.cost_by_hour.iloc[:0]),
                plot_cost_by_hour(res.cost_by_hour, order=["nope"]), plot_replicas_over_time(res.replicas,
                                                                                            order=["nope"])]
        drawn = plot_cost_by_hour(res.cost_by_hour)
    assert all([t.get_text() for t in ax.texts] == ["no data"] for ax in axes)
    assert drawn.get_legend() is not None and not drawn.texts
    plt.close("all")

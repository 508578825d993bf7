"""Inputs that once ran for ever, wrote outside ``results/``, or ended in a traceback: each now gets a one-line error
naming the field or file (or, for a damaged sweep cache, a warning and a fresh simulation)."""

from __future__ import annotations

import pytest

from sim.errors import ScenarioError
from sim.plan.config import PlanConfig
from sim.sweep import SweepError, load_experiment, run_sweep
from sim.tune.config import TuneConfig
from tests.conftest import scenario
from tests.test_cli import QUICKSTART, fleetsim
from tests.test_sweep import write_experiment


def test_an_open_loop_that_would_take_decades_to_arrive_is_a_wrong_unit():
    """20 requests at 1e-9/s would arrive over about 2e10 s: the run would split that into clock hours for ever."""
    with pytest.raises(ScenarioError, match=r"workload\.arrival: 20 requests at 1e-09 requests/s take more than "
                                            r"1e\+09 s .*a wrong unit\?"):
        scenario({"workload": {"num_requests": 20, "arrival": {"process": "constant", "rate_per_s": 1e-9}}})
    # A duration bounds the run whatever the rate; a slow rate that arrives within the bound is allowed.
    scenario({"workload": {"num_requests": 20, "duration_s": 100.0,
                           "arrival": {"process": "constant", "rate_per_s": 1e-9}}})
    scenario({"workload": {"num_requests": 20, "arrival": {"process": "poisson", "rate_per_s": 1e-6}}})


def test_a_sampling_interval_finer_than_a_tenth_of_a_second_is_refused():
    with pytest.raises(ScenarioError, match=r"monitoring\.interval_s: .*greater than or equal to 0\.1"):
        scenario({"monitoring": {"interval_s": 1e-6}})
    assert scenario({"monitoring": {"interval_s": 0.1}}).monitoring.interval_s == 0.1


def test_a_pool_may_not_be_called_all():
    """'all' names the whole fleet in the summary table, monitoring rows and alert rules."""
    with pytest.raises(ScenarioError, match=r"pools\.all: 'all' is reserved for the whole fleet"):
        scenario({"pools": {"all": {"gpu": "h100_sxm", "model": "llama-3.1-8b"}}})


def test_a_report_that_cannot_be_written_is_a_one_line_error(tmp_path, monkeypatch):
    out = tmp_path / "r"
    rc, _, err = fleetsim("run", QUICKSTART, "--quiet", "--set", "workload.num_requests=30", "--out", out)
    assert (rc, err) == (0, "")

    def refuse(results, html, png):
        raise FileNotFoundError(2, "No such file or directory", str(html))

    monkeypatch.setattr("sim.report.write_report", refuse)
    rc, _, err = fleetsim("report", out, "--html", tmp_path / "x.html")
    assert rc == 2 and err == f"fleetsim: error: {tmp_path / 'x.html'}: cannot write the report: No such file or " \
                              "directory\n"


@pytest.mark.parametrize("damage", [b"", b"garbage{", b"{}", b"[1, 2]", b"\xff\xfe"])
def test_a_damaged_cached_summary_is_simulated_again(tmp_path, capsys, damage):
    exp, runs = load_experiment(write_experiment(tmp_path, metrics=["ttft_s.p50"]))
    out = tmp_path / "out"
    first = run_sweep(exp, runs, out, progress=False)
    (cached,) = (out / "cache").glob("*.json")
    cached.write_bytes(damage)
    capsys.readouterr()
    simulated = []
    again = run_sweep(exp, runs, out, progress=False, on_run=simulated.append)
    assert len(simulated) == 1 and again.equals(first)
    assert f"fleetsim: warning: {cached}: " in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../../evil", "a/b", "", ".", "..", "a\\b", "tab\there"])
def test_names_that_would_leave_the_results_folder_are_refused(tmp_path, name):
    with pytest.raises(SweepError, match="names the default results folder"):
        load_experiment(write_experiment(tmp_path, name=name))
    for config in (TuneConfig, PlanConfig):
        with pytest.raises(ValueError, match="names the default results folder"):
            config.model_validate({"name": name})
    assert load_experiment(write_experiment(tmp_path, name="routers vs load-2"))[0].name == "routers vs load-2"


def test_a_kv_cache_with_no_room_at_all_does_not_advise_max_model_len_0():
    rc, _, err = fleetsim("validate", QUICKSTART, "--set", "pools.h100.engine.activation_reserve_gib=1000")
    assert rc == 2 and "holds 0 tokens" in err and "nothing is left for it: use more memory" in err
    assert "<= 0" not in err


def test_a_number_inside_a_set_list_gets_advice_that_works(tmp_path):
    """``--set 'workload.clients=[99]'``: quoting the whole value would make one string, not a list of them."""
    path = tmp_path / "sg.yaml"
    path.write_text(QUICKSTART.read_text(encoding="utf-8"), encoding="utf-8")
    rc, _, err = fleetsim("validate", path, "--set", "workload={type: servegen, path: x, clients: [99]}")
    assert rc == 2 and "clients.0: Input should be a valid string, got 99" in err
    assert "quote the text inside it" in err and "'workload=" not in err


def test_a_results_file_that_cannot_be_read_is_named(tmp_path):
    out = tmp_path / "r"
    rc, _, err = fleetsim("run", QUICKSTART, "--quiet", "--set", "workload.num_requests=20", "--out", out)
    assert (rc, err) == (0, "")
    (out / "summary.json").write_text("{bad", encoding="utf-8")
    rc, _, err = fleetsim("report", out, "--html", tmp_path / "r.html")
    assert rc == 2 and err.startswith(f"fleetsim: error: {out / 'summary.json'}: cannot read the results: ")


def test_a_run_does_not_overwrite_the_scenario_file_it_runs(tmp_path):
    scenario = tmp_path / "scenario.yaml"
    text = "# my notes\n" + QUICKSTART.read_text(encoding="utf-8")
    scenario.write_text(text, encoding="utf-8")
    rc, _, err = fleetsim("run", scenario, "--quiet", "--set", "workload.num_requests=20", "--out", tmp_path)
    assert rc == 2 and "the file being run" in err and scenario.read_text(encoding="utf-8") == text
    rc, _, err = fleetsim("run", scenario, "--quiet", "--set", "workload.num_requests=20", "--out", tmp_path / "o")
    assert (rc, err) == (0, "")


def _closed_loop(**workload):
    return scenario({"workload": {"type": "closed_loop", "clients": 2, "prompt_tokens": {"dist": "fixed",
                                                                                         "tokens": 5000},
                                  "output_tokens": {"dist": "fixed", "tokens": 10}, **workload}})


def test_a_closed_loop_whose_every_request_is_rejected_at_once_stops_with_an_error():
    """Clients that resend the moment their request is rejected, with no request limit, would never let time pass."""
    from sim import simulate
    from sim.errors import FleetsimError

    with pytest.raises(FleetsimError, match=r"rejected as they are sent \(exceeds_max_model_len\) and think_time_s "
                                            r"is 0, so a client would resend for ever at t=0 s"):
        simulate(_closed_loop(duration_s=10.0))
    # A request limit, or a think time, lets it end: every request is accounted for, rejected with its reason.
    for bounded in ({"num_requests": 30}, {"duration_s": 10.0, "think_time_s": 1.0}):
        res = simulate(_closed_loop(**bounded))
        counts = res.summary["requests"]
        assert counts["arrived"] == counts["rejected"] > 0 and counts["finished"] == 0
        assert set(res.requests["reject_reason"]) == {"exceeds_max_model_len"}


def test_a_trace_thinned_to_less_than_one_expected_request_is_refused():
    from tests.conftest import AZURE_CONV

    trace = {"type": "trace", "path": str(AZURE_CONV), "format": "azure", "num_requests": 10}
    with pytest.raises(ScenarioError, match=r"workload\.rate_scale: 0\.01 keeps each of the window's 10 requests"):
        scenario({"workload": {**trace, "rate_scale": 0.01}})
    assert scenario({"workload": {**trace, "rate_scale": 0.1}}).workload.rate_scale == 0.1


def test_many_clients_with_some_requests_too_long_run_to_the_end():
    """Rejections at t=0 by many clients add up past the limit, but each client is admitted after a few tries: only
    one client's rejections in a row mean it is stuck (5,000 clients, three quarters of the prompts too long)."""
    from sim import simulate

    sc = scenario({"workload": {"type": "closed_loop", "clients": 5000, "duration_s": 0.05,
                                "prompt_tokens": {"dist": "uniform", "low": 1000, "high": 16000},
                                "output_tokens": {"dist": "fixed", "tokens": 2}},
                   "pools": {"p": {"replicas": 4}}})
    counts = simulate(sc).summary["requests"]
    assert counts["rejected"] > 10_000 and counts["arrived"] == counts["finished"] + counts["rejected"] + \
        counts["in_flight"]


def test_a_folder_in_place_of_a_cached_summary_is_an_error_not_a_deletion(tmp_path):
    exp, runs = load_experiment(write_experiment(tmp_path, metrics=["ttft_s.p50"]))
    out = tmp_path / "out"
    run_sweep(exp, runs, out, progress=False)
    (cached,) = (out / "cache").glob("*.json")
    cached.unlink()
    cached.mkdir()
    with pytest.raises(SweepError, match=r"a folder where a cached run summary belongs"):
        run_sweep(exp, runs, out, progress=False)
    assert cached.is_dir()


def test_the_decades_check_leaves_runs_bounded_by_max_duration_alone():
    sc = scenario({"workload": {"num_requests": 2_000_000, "arrival": {"process": "poisson", "rate_per_s": 0.001}},
                   "run": {"max_duration_s": 86400.0}})
    assert sc.run.max_duration_s == 86400.0


def test_a_fitted_trace_at_one_instant_is_found_by_validation(tmp_path):
    trace = tmp_path / "one.csv"
    trace.write_text("t,p,o\n5,100,10\n")
    fitted = {"type": "fitted", "path": str(trace), "format": "csv", "window_s": 60.0,
              "columns": {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}}
    with pytest.raises(ScenarioError, match=r"workload\.path: .*one\.csv: its one request arrives: a fit needs"):
        scenario({"workload": fitted})


def test_sweep_and_study_arguments_from_a_notebook_are_checked(tmp_path):
    from sim.sweep import summarize_sweep

    exp, runs = load_experiment(write_experiment(tmp_path, metrics=["ttft_s.p50"]))
    for workers in ("2", None, 2.5, 0, True):
        with pytest.raises(SweepError, match=r"workers .*: must be a whole number, at least 1"):
            run_sweep(exp, runs, tmp_path / "o", workers=workers, progress=False)
    with pytest.raises(SweepError, match="out: give a folder path"):
        run_sweep(exp, runs, None, progress=False)
    with pytest.raises(SweepError, match="runs: none to simulate"):
        run_sweep(exp, [], tmp_path / "o", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SweepError, match="is a file; give a folder"):
        run_sweep(exp, runs, tmp_path / "file", progress=False)
    data = run_sweep(exp, runs, tmp_path / "o", progress=False)
    for confidence in (-1, 1.5, "0.9", 0, 1):
        with pytest.raises(SweepError, match=r"confidence .*: must be a number between 0 and 1"):
            summarize_sweep(data, confidence=confidence)
    assert len(summarize_sweep(data, confidence=0.9)) == 1


def test_a_results_table_of_no_finished_request_is_float():
    from sim import simulate

    res = simulate(scenario({"pools": {"p": {"engine": {"max_model_len": 16}}}}))
    table = res.table()
    assert res.summary["requests"]["finished"] == 0
    assert all(table[c].dtype == float for c in table.columns if c not in ("pool", "finished", "rejected"))


def test_overrides_given_as_a_dict_are_pointed_to_load_scenario_with():
    from sim import load_scenario

    with pytest.raises(ScenarioError, match=r"not a dict \(for typed values by key, use sim\.scenario\."
                                            r"load_scenario_with\)"):
        load_scenario(QUICKSTART, {"workload.num_requests": 50})


def test_runs_planned_from_another_version_of_the_experiment_are_refused(tmp_path):
    exp, runs = load_experiment(write_experiment(tmp_path, metrics=["ttft_s.p50"]))
    changed = exp.model_copy(update={"set": {**exp.set, "workload.num_requests": 20}})
    with pytest.raises(SweepError, match="runs: planned from another version of the experiment"):
        run_sweep(changed, runs, tmp_path / "o", progress=False)
    # A new name or other metrics keep the runs (they decide only which rows are kept).
    renamed = exp.model_copy(update={"name": "other", "metrics": ("ttft_s.p99",)})
    assert set(run_sweep(renamed, runs, tmp_path / "o", progress=False)["metric"]) == {"ttft_s.p99"}


def test_a_progress_function_of_the_wrong_shape_is_named_before_the_run():
    from sim import simulate
    from sim.errors import FleetsimError

    with pytest.raises(FleetsimError, match=r"progress: .* cannot be called with \(now_s, done, expected\)"):
        simulate(scenario(), progress=lambda now_s: None)
    seen = []
    simulate(scenario(), progress=lambda now_s, done, expected: seen.append(done))
    assert seen and seen[-1] == 50

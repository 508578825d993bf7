"""Monitoring and alerts (sim/metrics/monitoring.py): the sampled metrics against the time series they come from,
and alert intervals recomputed by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from sim import simulate
from sim.config import AlertRule
from sim.metrics.monitoring import _step_integral, alert_intervals
from tests.conftest import scenario


def test_step_integral_against_a_fine_grid():
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0, 10, 30))
    values = rng.integers(0, 5, 30).astype(float)
    edges = np.linspace(0, 12, 7)
    grid = np.linspace(0, 12, 1_200_001)[:-1] + 0.5e-5
    level = np.where(np.searchsorted(times, grid, side="right") > 0,
                     values[np.clip(np.searchsorted(times, grid, side="right") - 1, 0, None)], 0)
    brute = [level[(grid >= a) & (grid < b)].sum() * 1e-5 for a, b in itertools.pairwise(edges)]
    np.testing.assert_allclose(_step_integral(times, values, edges), brute, atol=2e-4)


def samples(values, step=10.0):
    return pd.DataFrame({"time_s": step * np.arange(1, len(values) + 1), "pool": "all", "m": values})


def test_alert_fires_after_for_and_resolves_on_the_first_good_sample():
    # Above 5 from t=20 to t=60 (samples 20..60), good at 70; for_s 20: fires at 40, resolves at 70.
    s = samples([1, 6, 7, 8, 9, 7, 2, 9, np.nan, 9])
    got = alert_intervals(s, "a", "m", above=5, below=None, for_s=20, end_s=100)
    assert got == [{"alert": "a", "pool": "all", "metric": "m", "start_s": 40.0, "end_s": 70.0, "duration_s": 30.0,
                    "peak": 9.0}]
    # for_s 0: every breach fires at once; a NaN sample resolves; a breach at the end lasts to the run's end.
    got = alert_intervals(s, "a", "m", above=5, below=None, for_s=0, end_s=105)
    assert [(g["start_s"], g["end_s"]) for g in got] == [(20.0, 70.0), (80.0, 90.0), (100.0, 105.0)]
    low = alert_intervals(s, "b", "m", above=None, below=2, for_s=0, end_s=100)
    assert [(g["start_s"], g["end_s"], g["peak"]) for g in low] == [(10.0, 20.0, 1.0)]


def test_monitoring_metrics_come_from_the_run_and_alerts_recompute():
    sc = scenario({"pools": {"p": {"replicas": 2, "price": {"usd_per_gpu_hour": 3.6}}},
                   "workload": {"num_requests": 400, "arrival": {"process": "poisson", "rate_per_s": 20.0}},
                   "monitoring": {"interval_s": 5, "alerts": [
                       {"name": "q", "metric": "queue_depth", "above": 2, "for_s": 5},
                       {"name": "busy", "metric": "gpu_utilisation", "above": 0.5, "pool": "p"}]}})
    res = simulate(sc, seed=0)
    mon, alerts = res.monitoring, res.alerts
    assert set(mon["pool"]) == {"p", "all"}
    allrows = mon[mon["pool"] == "all"].reset_index(drop=True)
    end = res.summary["duration_s"]
    # Queue depth is the time series' waiting count at each sample time.
    ts = res.timeseries
    for _, row in allrows.iloc[::7].iterrows():
        before = ts[ts["time_s"] <= row["time_s"]]
        assert row["queue_depth"] == (before["waiting"].iloc[-1] if len(before) else 0)
    # Utilisation over the whole run is the replicas' busy time over their alive time.
    weights = np.diff(np.concatenate([[0.0], allrows["time_s"].to_numpy()]))
    alive = res.replicas["end_s"] - res.replicas["start_s"]
    whole = (allrows["gpu_utilisation"] * 2 * np.minimum(weights, end)).sum() / (2 * end)
    assert whole == pytest.approx(res.replicas["busy_s"].sum() / alive.sum(), rel=0.02)
    # Cost per request in a sample: 2 GPUs x $3.6/h = $0.002/s over the requests finished in it.
    done = res.requests[res.requests["status"] == "finished"]
    row = allrows.iloc[len(allrows) // 2]
    n = ((done["finish_s"] > row["time_s"] - 5) & (done["finish_s"] <= row["time_s"])).sum()
    assert row["cost_per_request_usd"] == pytest.approx(0.002 * 5 / n)
    # The alerts are the rules applied to the samples.
    for rule in sc.monitoring.alerts:
        pool = rule.pool or "all"
        expect = alert_intervals(mon[mon["pool"] == pool], rule.name, rule.metric, rule.above, rule.below,
                                 rule.for_s, end)
        got = alerts[alerts["alert"] == rule.name].to_dict("records")
        assert got == expect
        assert res.summary["alerts"][rule.name]["fired"] == len(expect)


def test_alert_rules_are_checked():
    with pytest.raises(ValueError, match="give above and/or below"):
        AlertRule(name="x", metric="queue_depth")
    from sim.errors import ScenarioError
    with pytest.raises(ScenarioError, match=r"alerts.0.pool: alert 'x': 'nope' is not a pool of this scenario \(p\)"):
        scenario({"monitoring": {"alerts": [{"name": "x", "metric": "queue_depth", "above": 1, "pool": "nope"}]}})


def test_samples_stop_at_the_run_end_and_count_the_gateway():
    sc = scenario({"workload": {"num_requests": 2000, "arrival": {"process": "poisson", "rate_per_s": 40.0}},
                   "run": {"max_duration_s": 7.5}, "monitoring": {"interval_s": 5}})
    mon = simulate(sc, seed=0).monitoring
    assert mon["time_s"].max() == 7.5
    assert (mon["gpu_utilisation"].dropna() <= 1.0 + 1e-12).all()
    # A pool down for maintenance: the requests waiting at the gateway show in the fleet's queue depth.
    down = scenario({"pools": {"p": {"replicas": 1}}, "workload": {"num_requests": 200},
                     "maintenance": {"windows": [{"pool": "p", "start_s": 5.0, "duration_s": 20.0}]},
                     "monitoring": {"interval_s": 5}})
    res = simulate(down, seed=0)
    rows = res.monitoring[(res.monitoring["pool"] == "all") & (res.monitoring["time_s"] == 20.0)]
    assert rows["queue_depth"].iloc[0] > 10

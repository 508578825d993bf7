"""Cost and energy arithmetic on hand-built replica timelines."""

from __future__ import annotations

import pandas as pd
import pytest

from sim import simulate
from sim.metrics.cost import INTERVAL_COLUMNS, cost_by_hour, energy_kwh
from tests.conftest import scenario


def timeline(rows):
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS[:10])  # the optional sharing columns left out


def test_cost_split_by_clock_hour():
    # pool a: 2 GPUs from 30 min to 2 h 15 min at $1/GPU-h; pool b: 1 GPU for the first 10 minutes at $3.6.
    tl = timeline([
        ("a", "l4", 0, 2, 1800.0, 8100.0, 0.0, 1.0, 20.0, 72.0),
        ("b", "h100_sxm", 1, 1, 0.0, 600.0, 0.0, 3.6, 70.0, 700.0),
    ])
    got = cost_by_hour(tl).set_index(["hour", "pool"])
    assert got.loc[(0, "a"), "gpu_hours"] == pytest.approx(1.0)
    assert got.loc[(1, "a"), "gpu_hours"] == pytest.approx(2.0)
    assert got.loc[(2, "a"), "gpu_hours"] == pytest.approx(0.5)
    assert got.loc[(0, "b"), "usd"] == pytest.approx(0.6)
    assert got["usd"].sum() == pytest.approx(3.5 + 0.6)
    assert len(got) == 4


def test_energy_two_level_power_model():
    # 1 GPU alive 1 h, busy 15 min at 700 W and idle 45 min at 100 W: 0.175 + 0.075 kWh.
    tl = timeline([("a", "h100_sxm", 0, 1, 0.0, 3600.0, 900.0, 1.0, 100.0, 700.0)])
    assert energy_kwh(tl) == pytest.approx(0.25)
    # Two GPUs per replica double it.
    tl.loc[0, "gpus"] = 2
    assert energy_kwh(tl) == pytest.approx(0.5)


def test_run_cost_matches_replicas_times_duration_times_price():
    sc = scenario({"pools": {"p": {"replicas": 3, "tensor_parallel": 2, "price": {"usd_per_gpu_hour": 2.0}}}})
    res = simulate(sc, seed=0)
    hours = res.summary["duration_s"] / 3600
    assert res.summary["cost"]["usd_total"] == pytest.approx(3 * 2 * hours * 2.0)
    assert res.summary["cost"]["usd_per_hour"] == pytest.approx(12.0)
    out_tokens = res.requests.loc[res.requests["status"] == "finished", "output_tokens"].sum()
    assert res.summary["cost"]["usd_per_million_output_tokens"] == pytest.approx(
        res.summary["cost"]["usd_total"] / out_tokens * 1e6)


def test_catalog_default_price_is_used(tiny_scenario):
    from sim.catalog import load_catalog

    default = next(p for p in load_catalog().prices_for("h100_sxm") if p.default)
    res = simulate(tiny_scenario, seed=0)
    assert res.summary["cost"]["usd_per_hour"] == pytest.approx(default.usd_per_gpu_hour)

"""Total cost of ownership (sim/tco.py) on hand-computed cases, the break-even closed form, and the run's
utilisation block (sim/metrics/utilisation.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sim import simulate
from sim.catalog import load_catalog
from sim.tco import (
    Ownership,
    api_cost_of_run,
    api_usd_per_output_token,
    break_even_table,
    break_even_tokens_per_month,
    gpu_hour_prices,
    owned_usd_per_gpu_hour,
    self_hosting_usd_per_month,
)
from tests.conftest import scenario


def test_owned_gpu_hour_by_hand():
    cat = load_catalog()
    h100 = cat.gpus["h100_sxm"]
    card = next(p for p in cat.prices if p.gpu == "h100_sxm" and p.tier == "self_hosted").usd_per_gpu_hour * 26280
    own = Ownership(years=4, usd_per_kwh=0.2, pue=1.5, utilisation=0.5, server_overhead=0.25,
                    licence_usd_per_gpu_year=4500)
    got = owned_usd_per_gpu_hour("h100_sxm", own)
    assert got["capex"] == pytest.approx(card * 1.25 / (4 * 8760))
    watts = h100.idle_w + 0.5 * (h100.tdp_w - h100.idle_w)
    assert got["power"] == pytest.approx(watts / 1000 * 1.5 * 0.2)
    assert got["licence"] == pytest.approx(4500 / 8760)
    assert got["total"] == pytest.approx(got["capex"] + got["power"] + got["licence"])
    assert gpu_hour_prices("h100_sxm", own)["self_hosted"][0] == pytest.approx(got["total"])
    with pytest.raises(ValueError, match="pue >= 1"):
        Ownership(pue=0.9)


def test_break_even_is_the_closed_form_for_a_constant_workload():
    month, capacity = 1000.0, 5e9  # a replica: $1,000 a month, 5 billion output tokens a month
    api = api_usd_per_output_token(usd_per_m_input=1.0, usd_per_m_output=4.0, input_per_output=2.0)
    assert api == pytest.approx(6e-6)
    t_star = break_even_tokens_per_month(month, capacity, api)
    assert t_star == pytest.approx(month / api)
    for factor, self_cheaper in [(0.9, False), (1.1, True), (20.0, True)]:
        t = factor * t_star
        assert (self_hosting_usd_per_month(t, month, capacity) < api * t) is self_cheaper
    assert self_hosting_usd_per_month(t_star, month, capacity) == pytest.approx(api * t_star)
    # An API cheaper per token than the replica's marginal cost never loses.
    assert break_even_tokens_per_month(month, capacity, 0.5 * month / capacity) == math.inf


def test_break_even_table_rows():
    deployments = pd.DataFrame([{"model": "m", "gpu": "l4", "precision": "fp8", "fits": True, "tensor_parallel": 1,
                                 "slo_tok_s_per_gpu": 1000.0}])
    apis = pd.DataFrame([{"name": "x", "usd_per_m_input": 0.5, "usd_per_m_output": 2.0}])
    table = break_even_table(deployments, target_utilisation=0.5, input_per_output=2.0, apis=apis)
    assert set(table["paid"]) >= {"on_demand", "self_hosted"}
    row = table[table["paid"] == "on_demand"].iloc[0]
    tokens = 1000.0 * 3600 * 730 * 0.5
    month = row["usd_per_gpu_hour"] * 730
    assert row["usd_per_m_output_tokens"] == pytest.approx(month / tokens * 1e6)
    assert row["break_even_vs_x"] == pytest.approx(month / 3e-6)


def test_api_cost_of_a_run():
    res = simulate(scenario({"workload": {"num_requests": 20}}), seed=0)
    apis = pd.DataFrame([{"name": "x", "usd_per_m_input": 1.0, "usd_per_m_output": 10.0}])
    req = res.requests
    expected = (req["prompt_tokens"].sum() * 1.0 + req["output_tokens"].sum() * 10.0) / 1e6
    assert api_cost_of_run(req, apis).iloc[0]["usd"] == pytest.approx(expected)


def test_utilisation_prices_the_time_the_gpus_were_not_busy():
    res = simulate(scenario({"pools": {"p": {"replicas": 3, "price": {"usd_per_gpu_hour": 2.0}}},
                             "workload": {"num_requests": 60}}), seed=0)
    u = res.summary["utilisation"]
    billed = res.cost_by_hour["gpu_hours"].sum()
    busy = (res.replicas["gpu_busy_s"] * res.replicas["gpus"]).sum() / 3600
    assert u["billed_gpu_hours"] == pytest.approx(billed)
    assert u["busy_gpu_hours"] == pytest.approx(busy)
    assert u["utilisation"] == pytest.approx(busy / billed) and 0 < u["utilisation"] < 0.8  # over-provisioned
    assert sum(u["usd"].values()) == pytest.approx(res.summary["cost"]["usd_total"])
    assert u["usd"]["busy"] == pytest.approx(busy * 2.0)
    assert set(u["usd"]) == {"busy", "serving_not_busy", "cold_start", "no_replica"}
    assert u["usd_per_request"] == pytest.approx(res.summary["cost"]["usd_total"] / 60)
    assert u["usd_per_request_if_fully_used"] == pytest.approx(busy * 2.0 / 60)


def test_cli_tco(capsys):
    from sim.cli import main

    assert main(["tco", "--gpus", "l4", "h100_sxm", "--licence-usd-per-gpu-year", "4500"]) == 0
    out = capsys.readouterr().out
    assert "self_hosted" in out and "break_even_vs_claude-sonnet" in out and "deepseek-v3" in out
    assert main(["tco", "--gpus", "l5"]) == 2
    assert "unknown GPU 'l5'" in capsys.readouterr().err
    assert main(["tco", "--pue", "0.5"]) == 2


def test_cli_tco_says_why_a_cost_is_infinite(capsys):
    """A TPOT target no step can meet: the inf in the table is explained, naming the GPUs."""
    from sim.cli import main

    assert main(["tco", "--gpus", "l4", "h100_sxm", "--tpot-s", "0.0001"]) == 0
    out = capsys.readouterr().out
    assert "h100_sxm, l4: no batch size meets TPOT <= 0.1 ms" in out
    assert main(["tco", "--gpus", "l4"]) == 0
    assert "no batch size" not in capsys.readouterr().out

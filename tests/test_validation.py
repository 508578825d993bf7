"""End-to-end validation against measured vLLM serving on H100 (sim/perf/validation.py).

The shipped ``step_overhead.yaml`` records the report half's errors; these tests recompute them from the
shipped file, the shipped kernel calibration and the project's copy of the rows, and check the split and
the fit's shortcut.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.perf import step_overhead_defaults
from sim.perf import validation as v

SUMMARY_KEYS = ("ttft_median_ape_pct", "ttft_p90_ape_pct", "tpot_median_ape_pct", "tpot_p90_ape_pct")


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return v.load_rows()


@pytest.fixture(scope="module")
def shipped() -> dict:
    return v.read_step_overhead(v.STEP_OVERHEAD_PATH)


def test_rows_are_the_vllm_h100_rows(rows):
    assert len(rows) == 138
    assert set(rows["backend"]) == {"vllm"}
    assert set(rows["system"]) == {"h100_sxm"}
    assert set(rows["model_path"]) < set(v.MODEL_KEYS)
    assert set(rows["precision"]) == {"", "fp8"}


def test_split_puts_at_most_half_in_the_fit_set(rows):
    fit, report = v.split_rows(rows)
    assert len(fit) <= len(rows) / 2
    assert not set(fit.index) & set(report.index)
    assert sorted(fit.index.tolist() + report.index.tolist()) == rows.index.tolist()
    # Every (model, precision, TP) with two rows or more is in both halves.
    key = ["model_path", "precision", "tp_size"]
    sizes = rows.groupby(key).size()
    for stratum in sizes[sizes > 1].index:
        assert stratum in fit.groupby(key).size().index
        assert stratum in report.groupby(key).size().index


def test_split_is_deterministic_and_ignores_row_order(rows):
    fit, _ = v.split_rows(rows)
    shuffled = rows.sample(frac=1.0, random_state=7)
    fit2, _ = v.split_rows(shuffled)
    assert sorted(fit2.index) == sorted(fit.index)


def test_shipped_fit_used_only_the_fit_half(rows, shipped):
    fit, report = v.split_rows(rows)
    assert shipped["fitted_on"] == v.row_keys(fit)
    assert not set(shipped["fitted_on"]) & set(v.row_keys(report))
    for key, (low, high) in v.OVERHEAD_BOUNDS_S.items():
        assert low <= shipped[key] <= high, key
    assert shipped["max_num_batched_tokens"] in v.TOKEN_BUDGETS
    by_budget = shipped["objective"]["by_token_budget"]
    assert set(by_budget) == set(v.TOKEN_BUDGETS)
    assert by_budget[shipped["max_num_batched_tokens"]] == min(by_budget.values())
    assert shipped["objective"]["minimised"] == v.OBJECTIVE


def test_shipped_file_is_the_kernel_model_default(shipped):
    assert step_overhead_defaults() == {k: shipped[k] for k in v.OVERHEAD_BOUNDS_S}
    assert v.harness_token_budget() == shipped["max_num_batched_tokens"]


def test_report_half_errors_are_reproducible(rows, shipped):
    """Recompute every report-half row (about 15 s) and compare with what the YAML records."""
    _, report = v.split_rows(rows)
    table = v.validation_table(report, {k: shipped[k] for k in v.OVERHEAD_BOUNDS_S}, shipped["max_num_batched_tokens"])
    result = v.summary(table)
    assert result["rows"] == shipped["report"]["rows"] == len(report)
    for key in SUMMARY_KEYS:
        assert result[key] == pytest.approx(shipped["report"][key], abs=1e-4), key


def test_scenario_for_row_maps_the_benchmark(rows):
    row = rows[(rows["precision"] == "") & (rows["tp_size"] == 4)].iloc[0]
    scenario = v.scenario_for_row(row, {"step_overhead_s": 1e-3, "per_sequence_overhead_s": 5e-5}, 2048)
    pool = scenario.pools["vllm"]
    wl = scenario.workload
    assert (pool.gpu, pool.model, pool.precision, pool.tensor_parallel, pool.replicas) == (
        "h100_sxm", "qwen3-32b", "bf16", 4, 1)
    assert pool.engine.max_model_len >= row["isl"] + row["osl"]
    assert pool.engine.max_num_seqs >= row["concurrency"]
    assert pool.engine.max_num_batched_tokens == 2048
    assert pool.perf.eager_overhead_per_layer_s is None
    assert (pool.perf.model, pool.perf.step_overhead_s, pool.perf.per_sequence_overhead_s) == ("kernel", 1e-3, 5e-5)
    assert (wl.type, wl.clients, wl.think_time_s) == ("closed_loop", row["concurrency"], 0.0)
    assert wl.num_requests == max(4 * row["concurrency"], 40)
    assert (wl.prompt_tokens.tokens, wl.output_tokens.tokens) == (row["isl"], row["osl"])
    llama = rows[rows["model_path"] == "meta-llama/Llama-3.1-70B"].iloc[0]
    assert v.scenario_for_row(llama).pools["vllm"].precision == "fp8"
    assert v.scenario_for_row(llama).pools["vllm"].perf.step_overhead_s is None


def test_means_are_affine_in_the_overheads(rows):
    """The fit's shortcut: a closed loop's schedule does not depend on step times."""
    row = rows[(rows["isl"] == 1024) & (rows["osl"] == 128) & (rows["concurrency"] == 8)].iloc[0]
    x = np.array([3.7e-3, 1.23e-4, 9.1e-3])
    for budget in v.TOKEN_BUDGETS:
        coeffs = v.affine_response(row, budget)
        direct = np.array(v.simulate_row(row, dict(zip(v.OVERHEAD_BOUNDS_S, x, strict=True)), budget))
        np.testing.assert_allclose(coeffs[:, 0] + coeffs[:, 1:] @ x, direct, rtol=1e-9)


@pytest.mark.slow
def test_fit_reproduces_the_shipped_overheads(rows, shipped):
    """Refit on the fit half (about a minute) and compare with the shipped figures."""
    fit, _ = v.split_rows(rows)
    overheads, _ = v.fit_step_overhead(fit, shipped["max_num_batched_tokens"])
    for key, value in overheads.items():
        assert value == pytest.approx(shipped[key], rel=1e-3, abs=1e-8), key

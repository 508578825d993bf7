"""Synthesis fitted to a trace and ServeGen multi-client traffic (sim/workload/synthesis.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sim import simulate
from sim.errors import TraceError
from sim.workload.synthesis import Windows, fit_trace, read_servegen, renewal_arrivals
from sim.workload.traces import read_azure_csv
from tests.conftest import ROOT, scenario

CONV = ROOT / "data" / "traces" / "azure-2023" / "AzureLLMInferenceTrace_conv.csv"
CODE = ROOT / "data" / "traces" / "azure-2023" / "AzureLLMInferenceTrace_code.csv"
SERVEGEN = ROOT / "data" / "traces" / "servegen" / "deepseek-r1"


def test_renewal_arrivals_have_the_windows_rate_and_cv():
    w = Windows(np.array([0.0, 3600.0]), np.array([5.0, 1.0]), np.array([1.0, 3.0]), 3600.0)
    times = renewal_arrivals(w, np.random.default_rng(0))
    first, second = times[times < 3600], times[times >= 3600]
    assert len(first) == pytest.approx(18_000, rel=0.03)
    assert len(second) == pytest.approx(3_600, rel=0.15)  # bursty: counts vary more
    for part, cv in ((first, 1.0), (second, 3.0)):
        gaps = np.diff(part)
        assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.15)


@pytest.mark.parametrize("path", [CONV])
def test_fitted_synthesis_reproduces_the_traces_rates_and_length_quantiles(path):
    trace = read_azure_csv(path)
    res = simulate(scenario({"workload": {"type": "fitted", "path": str(path), "window_s": 600},
                             "pools": {"p": {"replicas": 4}}}))
    req = res.requests
    # Per 10-minute window, the synthetic count is within 20% of the trace's (each window's rate is fitted).
    bins = np.arange(0, trace.arrival_s[-1] - 600, 600)
    got = np.histogram(req["arrival_s"], bins)[0]
    want = np.histogram(trace.arrival_s, bins)[0]
    np.testing.assert_allclose(got, want, rtol=0.2)
    # Lengths are resampled from the trace: quantiles within 5%.
    for column, values in (("prompt_tokens", trace.prompt_tokens), ("output_tokens", trace.output_tokens)):
        for q in (50, 90):
            assert np.percentile(req[column], q) == pytest.approx(np.percentile(values, q), rel=0.05)


def test_fitted_synthesis_of_a_bursty_trace_stays_bursty():
    # The code trace's gaps have CV 13 within windows: counts per window vary too much to compare one by one, so
    # compare the burstiness and the whole count (its standard deviation is about sqrt(n) x CV).
    trace = read_azure_csv(CODE)
    res = simulate(scenario({"workload": {"type": "fitted", "path": str(CODE), "window_s": 600},
                             "pools": {"p": {"replicas": 4, "engine": {"max_model_len": 16384}}}}))
    times = np.sort(res.requests["arrival_s"].to_numpy())
    gaps, trace_gaps = np.diff(times), np.diff(trace.arrival_s)
    assert gaps.std() / gaps.mean() > 0.5 * trace_gaps.std() / trace_gaps.mean()
    n = len(trace)
    assert abs(len(times) - n) < 4 * np.sqrt(n) * 13


def test_fit_measures_each_windows_burstiness():
    code = fit_trace(read_azure_csv(CODE), 600)
    conv = fit_trace(read_azure_csv(CONV), 600)
    assert np.median(code.cv) > 2 * np.median(conv.cv)  # the code trace is the bursty one (reference Table A2)


def test_servegen_clients_follow_their_windows_and_length_tables():
    clients = read_servegen(SERVEGEN)
    assert sorted(c.client for c in clients) == ["12", "13", "3", "48"]
    res = simulate(scenario({"workload": {"type": "servegen", "path": str(SERVEGEN), "clients": ["3", "48"],
                                          "start_s": 0, "duration_s": 3600},
                             "pools": {"p": {"replicas": 2, "engine": {"max_model_len": 32768}}}}))
    expected = sum(c.windows.rate_per_s[:6].sum() * 600 for c in clients if c.client in ("3", "48"))
    assert res.summary["requests"]["arrived"] == pytest.approx(expected, rel=0.15)
    # Lengths come from the clients' tables: every prompt length is a value of one of them.
    values = set()
    for c in clients:
        if c.client in ("3", "48"):
            values |= set(c.lengths[0.0][0].tolist())
    assert set(res.requests["prompt_tokens"]) <= values | {1}


def test_servegen_errors_name_the_file(tmp_path):
    with pytest.raises(TraceError, match="no client 99"):
        read_servegen(SERVEGEN, ["99"])
    (tmp_path / "chunk-1-trace.csv").write_text("0,1.0,1.0,Gamma,1,1\n600,x,1,Gamma,1,1\n")
    with pytest.raises(TraceError, match="must be numbers") as err:
        read_servegen(tmp_path)
    assert err.value.line == 2


SHAREGPT = ROOT / "data" / "lengths" / "sharegpt_llama2_first5000.csv"


@pytest.mark.parametrize("kind", ["open_loop", "closed_loop"])
def test_paired_lengths_keep_each_requests_prompt_and_output_together(kind):
    import pandas as pd

    rows = pd.read_csv(SHAREGPT)
    pairs = set(zip(rows["num_prefill_tokens"], rows["num_decode_tokens"], strict=True))
    lengths = {"prompt_tokens": {"dist": "empirical", "path": str(SHAREGPT), "column": "num_prefill_tokens"},
               "output_tokens": {"dist": "empirical", "path": str(SHAREGPT), "column": "num_decode_tokens",
                                 "paired": True}}
    wl = ({"type": "open_loop", "num_requests": 200, "arrival": {"rate_per_s": 5.0}, **lengths} if kind == "open_loop"
          else {"type": "closed_loop", "clients": 4, "num_requests": 100, **lengths})
    res = simulate(scenario({"workload": wl, "pools": {"p": {"engine": {"max_model_len": 16384}}}}))
    got = set(zip(res.requests["prompt_tokens"], res.requests["output_tokens"], strict=True))
    assert got <= pairs and len(got) > 50


def test_paired_lengths_need_an_empirical_prompt_from_the_same_file():
    from sim.errors import ScenarioError

    with pytest.raises(ScenarioError, match="paired needs an empirical prompt_tokens"):
        scenario({"workload": {"prompt_tokens": {"dist": "fixed", "tokens": 100},
                               "output_tokens": {"dist": "empirical", "path": str(SHAREGPT),
                                                 "column": "num_decode_tokens", "paired": True}}})

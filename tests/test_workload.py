"""Workload sources: the Azure trace reader, trace windows, closed-loop clients, empirical lengths."""

from __future__ import annotations

import numpy as np
import pytest

from sim import simulate
from sim.workload.traces import read_azure_csv
from tests.conftest import AZURE_CONV, scenario


def test_azure_conv_trace_reads_whole_and_rebased():
    tr = read_azure_csv(AZURE_CONV)
    assert len(tr) == 19366
    assert tr.arrival_s[0] == 0.0 and np.all(np.diff(tr.arrival_s) >= 0)
    # 18:15:46.68 -> 19:14:08.40 (hardware-and-traces.md, Table A1): 58.4 minutes.
    assert tr.arrival_s[-1] == pytest.approx(3501.72, abs=0.01)
    assert tr.prompt_tokens.mean() == pytest.approx(1155, abs=1)
    assert tr.output_tokens.mean() == pytest.approx(211, abs=1)


def test_trace_window_time_scale_and_limit():
    base = {"workload": {"type": "trace", "path": str(AZURE_CONV)},
            "pools": {"p": {"engine": {"max_model_len": 16384}}}}
    full = read_azure_csv(AZURE_CONV)
    patch = {**base, "workload": {**base["workload"], "start_s": 600, "duration_s": 60, "time_scale": 0.5}}
    res = simulate(scenario(patch), seed=0)
    in_window = (full.arrival_s >= 600) & (full.arrival_s < 660)
    assert len(res.requests) == in_window.sum()
    np.testing.assert_allclose(res.requests["arrival_s"], (full.arrival_s[in_window] - 600) * 0.5)
    np.testing.assert_array_equal(res.requests["prompt_tokens"], full.prompt_tokens[in_window])
    limited = simulate(scenario({**base, "workload": {**base["workload"], "num_requests": 25}}), seed=0)
    assert len(limited.requests) == 25


def test_closed_loop_never_exceeds_its_clients_and_sends_exactly_n():
    patch = {"workload": {"type": "closed_loop", "clients": 4, "num_requests": 60, "think_time_s": 0.05,
                          "prompt_tokens": {"dist": "fixed", "tokens": 50},
                          "output_tokens": {"dist": "uniform", "low": 1, "high": 40}}}
    res = simulate(scenario(patch), seed=0)
    df = res.requests
    assert len(df) == 60 and (df["status"] == "finished").all()
    # At any arrival, at most `clients` requests are in the system (including the new one).
    for t in df["arrival_s"]:
        in_system = ((df["arrival_s"] <= t) & (df["finish_s"] > t)).sum()
        assert in_system <= 4
    # The first four arrive together at time 0, one per client.
    assert (df["arrival_s"].iloc[:4] == 0).all()


def test_closed_loop_with_duration_stops_sending():
    patch = {"workload": {"type": "closed_loop", "clients": 2, "duration_s": 3.0,
                          "prompt_tokens": {"dist": "fixed", "tokens": 50},
                          "output_tokens": {"dist": "fixed", "tokens": 20}}}
    res = simulate(scenario(patch), seed=0)
    assert (res.requests["arrival_s"] < 3.0).all()
    assert (res.requests["status"] == "finished").all()


def test_empirical_lengths_from_a_csv(tmp_path):
    path = tmp_path / "lengths.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(f"{p},{d}\n" for p, d in
                                                                           [(100, 5), (200, 7), (300, 9)]))
    patch = {"workload": {"prompt_tokens": {"dist": "empirical", "path": str(path), "column": "num_prefill_tokens"},
                          "output_tokens": {"dist": "empirical", "path": str(path), "column": "num_decode_tokens"},
                          "num_requests": 200}}
    res = simulate(scenario(patch), seed=0)
    assert set(res.requests["prompt_tokens"]) == {100, 200, 300}
    assert set(res.requests["output_tokens"]) == {5, 7, 9}


def test_duration_bounded_open_loop_has_no_arrival_after_it():
    res = simulate(scenario({"workload": {"num_requests": None, "duration_s": 20.0}}), seed=0)
    assert (res.requests["arrival_s"] < 20.0).all()
    assert len(res.requests) == pytest.approx(40, abs=25)  # 2 req/s for 20 s


def test_closed_loop_ramp_up_spreads_the_first_wave():
    patch = {"workload": {"type": "closed_loop", "clients": 4, "num_requests": 12, "ramp_up_s": 2.0,
                          "prompt_tokens": {"dist": "fixed", "tokens": 50},
                          "output_tokens": {"dist": "fixed", "tokens": 200}}}
    df = simulate(scenario(patch), seed=0).requests
    # Each request takes 200 steps of 0.01 s, so the first wave is exactly the ramp: i x 0.5 s.
    assert df["arrival_s"].iloc[:4].tolist() == [0.0, 0.5, 1.0, 1.5]
    assert len(df) == 12 and (df["status"] == "finished").all()


@pytest.mark.parametrize(("mean", "cv", "max_tokens"), [(1000, 1.0, 7000), (200, 1.0, 1000), (37.5, 0.3, None),
                                                        (5000, 4.0, None), (300, 2.5, 301), (12, 0.05, 12)])
def test_lognormal_draws_are_scipy_lognorm_bit_for_bit(mean, cv, max_tokens):
    """The sampler computes the law with scipy.special (no scipy.stats import at run time): the same integers as
    scipy.stats.lognorm's rvs, or its cdf and ppf for the truncated law, from the same generator."""
    import math

    from scipy import stats

    from sim.workload.lengths import LogNormalLength

    dist = LogNormalLength(mean=mean, cv=cv, max_tokens=max_tokens)
    sigma = math.sqrt(math.log1p(cv**2))
    law = stats.lognorm(s=sigma, scale=math.exp(math.log(mean) - sigma**2 / 2))
    ref_rng = np.random.default_rng(7)
    if max_tokens is None:
        expected = np.ceil(law.rvs(size=20_000, random_state=ref_rng)).astype(np.int64)
    else:
        u = ref_rng.random(20_000) * law.cdf(max_tokens)
        expected = np.minimum(np.ceil(law.ppf(u)), max_tokens).astype(np.int64)
    np.testing.assert_array_equal(dist.sample(np.random.default_rng(7), 20_000), expected)

"""Same scenario and seed give identical results; runs do not interfere; random streams are independent."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim import simulate
from tests.conftest import scenario

BATCHING = {
    "workload": {"num_requests": 300, "arrival": {"process": "gamma", "rate_per_s": 20.0, "cv": 2.0}},
    "pools": {
        "p": {"replicas": 2, "perf": {"model": "roofline"}},
        "q": {"gpu": "l4", "model": "llama-3.1-8b", "precision": "fp8", "replicas": 1,
              "engine": {"max_model_len": 4096}},
    },
    "router": {"policy": "power_of_two"},
}


def test_same_seed_identical_frames():
    a = simulate(scenario(BATCHING), seed=7)
    b = simulate(scenario(BATCHING), seed=7)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.timeseries, b.timeseries)
    pd.testing.assert_frame_equal(a.cost_by_hour, b.cost_by_hour)
    assert a.summary == b.summary


def test_different_seeds_differ():
    a = simulate(scenario(BATCHING), seed=1)
    b = simulate(scenario(BATCHING), seed=2)
    assert not a.requests["arrival_s"].equals(b.requests["arrival_s"])


def test_two_interleaved_runs_do_not_interfere():
    alone = simulate(scenario(BATCHING), seed=3)
    # Another run in between, with other settings, must not change the first one's results.
    simulate(scenario({"workload": {"num_requests": 20}}), seed=99)
    again = simulate(scenario(BATCHING), seed=3)
    pd.testing.assert_frame_equal(alone.requests, again.requests)


def test_seed_sequence_children_are_accepted_and_reproducible():
    child = np.random.SeedSequence(42).spawn(3)[1]
    a = simulate(scenario(BATCHING), seed=child)
    b = simulate(scenario(BATCHING), seed=np.random.SeedSequence(42).spawn(3)[1])
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert a.summary["seed"] == {"entropy": 42, "spawn_key": [1]}


def test_changing_output_lengths_leaves_arrivals_and_prompts_unchanged():
    # Common random numbers: each source of randomness has its own stream.
    a = simulate(scenario(), seed=5).requests
    b = simulate(scenario({"workload": {"output_tokens": {"dist": "fixed", "tokens": 7}}}), seed=5).requests
    np.testing.assert_array_equal(a["arrival_s"], b["arrival_s"])
    np.testing.assert_array_equal(a["prompt_tokens"], b["prompt_tokens"])
    assert not np.array_equal(a["output_tokens"], b["output_tokens"])


def test_changing_the_router_leaves_the_workload_unchanged():
    a = simulate(scenario(BATCHING), seed=5).requests
    b = simulate(scenario({**BATCHING, "router": {"policy": "round_robin"}}), seed=5).requests
    np.testing.assert_array_equal(a["arrival_s"], b["arrival_s"])
    np.testing.assert_array_equal(a["output_tokens"], b["output_tokens"])


def test_a_progress_callback_changes_nothing():
    """``fleetsim run`` draws a progress bar, ``--quiet`` does not: the same summary (SimPy's event count included)
    and the same records, for a run that ends by itself, one cut by the clock, an autoscaled one with spot
    capacity, and one that stalls (spot capacity reclaimed and never found again)."""
    from sim import load_scenario
    from tests.conftest import ROOT
    from tests.test_lifecycle import hpa_pool, step_workload

    stalling = hpa_pool(replicas=1, spot={"reclaims_per_gpu_hour": 30.0, "notice_s": 10},
                        nodes={"stockout_probability": 1.0, "provision_timeout_s": 60, "retry_backoff_s": 60})
    del stalling["autoscale"]
    quickstart = ROOT / "configs" / "quickstart.yaml"
    cases = [load_scenario(quickstart, ["workload.num_requests=300"]),
             load_scenario(quickstart, ["workload.num_requests=3000", "run.max_duration_s=60"]),
             load_scenario(ROOT / "configs" / "spot_first_l40s.yaml", ["workload.duration_s=600"]),
             scenario({"workload": step_workload(100, 1.0, 1.0, 400, out_tokens=(50, 100)), "pools": {"p": stalling}})]
    for i, sc in enumerate(cases):
        calls = []
        quiet = simulate(sc, seed=1)
        shown = simulate(sc, seed=1, progress=lambda now_s, done, expected, calls=calls: calls.append((now_s, done)))
        assert shown.summary == quiet.summary, i
        pd.testing.assert_frame_equal(shown.requests, quiet.requests)
        assert calls and calls == sorted(calls), i  # time and finished requests only grow
        assert calls[-1][1] == quiet.summary["requests"]["finished"] + quiet.summary["requests"]["rejected"], i
    assert "stalled" in quiet.summary

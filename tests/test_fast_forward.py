"""Fast stepping (runs of whole-batch decode steps at once) gives the records of per-step stepping.

``engine.stepping: iteration`` is the reference: one SimPy event per engine step. ``fast`` (the default) prices
a run of identical-composition decode steps at once and waits for it with one event, cut by arrivals the
scheduler could admit. Over random scenarios (hypothesis) the request records, the event logs, busy time and
the pool time series must agree to 1e-9 s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import simulate
from sim.engine.request import Request
from sim.engine.scheduler import EngineLimits, VllmV1Scheduler
from sim.scenario import validate_scenario
from tests.conftest import draw_engine, merge, scenario

ROUTERS = ["round_robin", "least_outstanding", "jsq_tokens", "power_of_two"]
PERF = [
    {"model": "kernel"},
    {"model": "kernel", "gpu_time_scale": 0.7, "overlap_host": True},
    {"model": "kernel", "gpu_time_scale": 1.3},
    {"model": "roofline"},
    {"model": "constant", "step_s": 0.01, "per_token_s": 1e-4},
]


def both_modes(sc):
    """Results of ``sc`` with per-step and with fast stepping."""
    out = []
    for mode in ("iteration", "fast"):
        patch = {"pools": {name: {"engine": {"stepping": mode}} for name in sc.pools}}
        out.append(simulate(validate_scenario(merge(sc.model_dump(mode="json", by_alias=True), patch), "test")))
    return out


def assert_same(a, b):
    ra, rb = a.requests, b.requests
    assert list(ra.columns) == list(rb.columns)
    for column in ra.columns:
        x, y = ra[column], rb[column]
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=0, atol=1e-9, err_msg=column)
        else:
            pd.testing.assert_series_equal(x, y, check_names=False, obj=column)
    np.testing.assert_allclose(a.replicas["busy_s"], b.replicas["busy_s"], rtol=0, atol=1e-9)
    for key in ("arrived", "finished", "rejected", "in_flight"):
        assert a.summary["requests"][key] == b.summary["requests"][key]
    ta, tb = a.timeseries, b.timeseries
    assert len(ta) == len(tb)
    np.testing.assert_allclose(ta["time_s"].to_numpy(dtype=float), tb["time_s"].to_numpy(dtype=float), rtol=0,
                               atol=1e-9)
    for column in ("running", "waiting", "kv_used_blocks", "busy_replicas"):
        assert ta[column].tolist() == tb[column].tolist(), column
    if a.events is not None:
        ea = sorted(a.events, key=lambda e: (round(e[0], 9), e[1], e[2]))
        eb = sorted(b.events, key=lambda e: (round(e[0], 9), e[1], e[2]))
        assert [e[1:] for e in ea] == [e[1:] for e in eb]
        np.testing.assert_allclose([e[0] for e in ea], [e[0] for e in eb], rtol=0, atol=1e-9)


@st.composite
def scenarios(draw):
    block = draw(st.sampled_from([4, 16]))
    max_len = draw(st.integers(64, 1024))
    closed = draw(st.booleans())
    lengths = {
        "prompt_tokens": {"dist": "uniform", "low": 1, "high": draw(st.integers(1, 600))},
        "output_tokens": {"dist": "uniform", "low": 1, "high": draw(st.integers(1, 300))},
    }
    if closed:
        workload = {"type": "closed_loop", "clients": draw(st.integers(1, 24)), "num_requests": draw(
            st.integers(1, 80)), "think_time_s": draw(st.sampled_from([0.0, 0.05])), **lengths}
    else:
        workload = {"type": "open_loop", "arrival": {"process": "gamma", "rate_per_s": draw(st.floats(0.5, 100)),
                                                     "cv": draw(st.floats(0.3, 3))},
                    "num_requests": draw(st.integers(1, 80)), **lengths}
    patch = {
        "workload": workload,
        "pools": {"p": {
            "replicas": draw(st.integers(1, 3)),
            "engine": draw_engine(draw, max_len, block, max_seqs=32, spare_blocks=120, schedulers=True),
            "perf": draw(st.sampled_from(PERF)),
        }},
        "router": {"policy": draw(st.sampled_from(ROUTERS))},
        # Without the event log, fast stepping also keeps decoding requests in a lazy group (sim/engine/group.py).
        "run": {"trace_events": draw(st.booleans())},
    }
    if draw(st.booleans()):
        patch["run"]["max_duration_s"] = draw(st.floats(0.05, 20))
    if not closed and draw(st.booleans()):  # priority scheduling: a second class that jumps the queue
        patch["pools"]["p"]["engine"]["scheduling_policy"] = "priority"
        patch["classes"] = [{"name": "urgent", "priority": -1, "workload": {
            **workload, "num_requests": draw(st.integers(1, 30)),
            "arrival": {"process": "poisson", "rate_per_s": draw(st.floats(0.5, 50))}}}]
    return scenario(patch), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_fast_stepping_gives_the_per_step_records(case):
    sc, seed = case
    sc = sc.model_copy(update={"seed": seed})
    assert_same(*both_modes(sc))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([4.0, 8.0, 16.0]), st.sampled_from([0.0625, 0.125]))
def test_ties_between_arrivals_and_step_ends_resolve_as_per_step(case, rate, step_s):
    """Constant arrivals and constant binary-fraction step times put arrivals exactly on step ends, where the
    order of same-time events decides which step an arrival joins."""
    sc, seed = case
    data = sc.model_dump(mode="json", by_alias=True)
    patch = {"pools": {"p": {"perf": {"model": "constant", "step_s": step_s, "per_token_s": 0.0}}},
             "seed": seed}
    if data["workload"]["type"] == "open_loop":
        patch["workload"] = {"arrival": {"process": "constant", "rate_per_s": rate}}
    else:  # clients that think a whole number of steps finish and send on step ends of other replicas
        patch["workload"] = {"think_time_s": 2 * step_s}
    assert_same(*both_modes(validate_scenario(merge(data, patch), "test")))


def test_closed_loop_sends_at_a_finish_join_the_next_step_of_other_replicas():
    """Zero think time, constant 1/8 s steps, three replicas: clients send exactly on other replicas' step
    ends, inside their decode runs; per-step stepping has already planned those steps (found by search)."""
    patch = {"workload": {"type": "closed_loop", "clients": 11, "num_requests": 61, "think_time_s": 0.0,
                          "prompt_tokens": {"dist": "uniform", "low": 1, "high": 25},
                          "output_tokens": {"dist": "uniform", "low": 1, "high": 33}},
             "pools": {"p": {"replicas": 3, "perf": {"model": "constant", "step_s": 0.125, "per_token_s": 0.0},
                             "engine": {"max_num_seqs": 15, "max_model_len": 256}}},
             "router": {"policy": "round_robin"}}
    assert_same(*both_modes(scenario(patch)))


def test_fast_stepping_is_the_default():
    sc = scenario({})
    assert sc.pools["p"].engine.stepping == "fast"


def test_quickstart_records_agree():
    from sim.scenario import load_scenario
    from tests.conftest import ROOT

    sc = load_scenario(ROOT / "configs" / "quickstart.yaml")
    sc = sc.model_copy(update={"workload": sc.workload.model_copy(update={"num_requests": 400})})
    a, b = both_modes(sc)
    assert_same(a, b)
    assert b.requests["status"].eq("finished").all()


def _decoding(request_id, prompt, generated, output, block=16):
    req = Request(request_id, 0.0, prompt, output)
    req.generated_tokens = generated
    req.computed_tokens = prompt + generated - 1
    req.kv_blocks = -(-req.computed_tokens // block)
    return req


def test_decode_run_ends_at_the_first_finish_and_before_a_preemption():
    sched = VllmV1Scheduler(EngineLimits(max_num_seqs=8, max_num_batched_tokens=64, block_size=16,
                                         enable_chunked_prefill=True))
    running = [_decoding(0, 32, 1, 10), _decoding(1, 20, 5, 50)]
    # Remaining tokens 9 and 45: the run is 9 steps; nothing waits, so an arrival could join (not sealed).
    assert sched.decode_run(running, [], free_blocks=100) == (9, False)
    # Request 0 holds 32 KV tokens in 2 blocks and needs a third at its first step; request 1 (24 tokens in
    # 2 blocks) at its 9th. With 1 free block the run stops before step 9.
    assert sched.decode_run(running, [], free_blocks=1) == (8, False)
    assert sched.decode_run(running, [], free_blocks=0) == (0, False)  # the first step preempts
    # A waiting request that fits is admitted at the next step: no run.
    assert sched.decode_run(running, [Request(2, 0.0, 10, 5)], free_blocks=100) == (0, False)
    # One whose first chunk (62 tokens, 4 blocks) does not fit beside the decodes' blocks blocks admission for
    # the whole run, and seals it: free blocks only shrink during the run.
    assert sched.decode_run(running, [Request(2, 0.0, 2000, 5)], free_blocks=3) == (9, True)
    # max_num_seqs reached: sealed too.
    full = VllmV1Scheduler(EngineLimits(2, 64, 16, True))
    assert full.decode_run(running, [], free_blocks=100) == (9, True)
    # A request still prefilling: no run.
    prefilling = Request(3, 0.0, 100, 5)
    assert sched.decode_run([*running, prefilling], [], free_blocks=100) == (0, False)

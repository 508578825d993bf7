"""Invariants over random small scenarios (hypothesis): every request is accounted for, timestamps are
ordered, and nothing is over-allocated."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import simulate
from sim.engine import state as engine_state
from tests.conftest import draw_engine, scenario

ROUTERS = ["round_robin", "random", "least_outstanding", "jsq_tokens", "power_of_two"]


@st.composite
def small_scenarios(draw):
    block = draw(st.sampled_from([4, 16]))
    max_len = draw(st.integers(64, 512))
    patch = {
        "workload": {
            "arrival": {"process": "gamma", "rate_per_s": draw(st.floats(1, 200)), "cv": draw(st.floats(0.2, 4))},
            "num_requests": draw(st.integers(1, 60)),
            "prompt_tokens": {"dist": "uniform", "low": 1, "high": draw(st.integers(1, 400))},
            "output_tokens": {"dist": "uniform", "low": 1, "high": draw(st.integers(1, 100))},
        },
        "pools": {"p": {
            "replicas": draw(st.integers(1, 3)),
            "engine": draw_engine(draw, max_len, block, max_seqs=16, spare_blocks=40, schedulers=True),
            "perf": {"model": "constant", "step_s": draw(st.floats(0.001, 0.1)),
                     "per_token_s": draw(st.floats(0, 1e-3))},
        }},
        "router": {"policy": draw(st.sampled_from(ROUTERS))},
    }
    if draw(st.booleans()):
        patch["run"] = {"max_duration_s": draw(st.floats(0.05, 5))}
    return scenario(patch), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_scenarios())
def test_requests_are_conserved_and_timestamps_ordered(case):
    sc, seed = case
    res = simulate(sc, seed=seed)
    df = res.requests
    counts = res.summary["requests"]
    assert counts["arrived"] == len(df) == counts["finished"] + counts["rejected"] + counts["in_flight"]
    if sc.run.max_duration_s is None:
        assert counts["in_flight"] == 0
    finished = df[df["status"] == "finished"]
    assert (finished["arrival_s"] <= finished["first_token_s"]).all()
    assert (finished["first_token_s"] <= finished["finish_s"]).all()
    assert (df["queue_s"].dropna() >= 0).all()
    assert (df["request_id"].to_numpy() == np.arange(len(df))).all()
    assert df["arrival_s"].is_monotonic_increasing
    # Every rejection has a reason; nothing else has one.
    assert (df["reject_reason"].notna() == (df["status"] == "rejected")).all()
    ts = res.timeseries
    assert (ts[["running", "waiting", "kv_used_blocks", "busy_replicas"]] >= 0).all().all()
    blocks = sc.pools["p"].engine.num_gpu_blocks_override * sc.pools["p"].replicas
    assert (ts["kv_used_blocks"] <= blocks).all()


def test_kv_over_allocation_is_caught(monkeypatch):
    """The engine's own guard: a plan that allocates more blocks than are free fails loudly."""
    from collections import deque

    import pytest

    from sim.engine.request import Request
    from sim.engine.scheduler import StepPlan
    from sim.perf.shape import BatchShape

    st_ = engine_state.ReplicaState(total_blocks=1, block_size=4)
    r = Request(0, 0.0, 8, 1)
    st_.waiting = deque([r])
    bad = StepPlan(((r, 8),), (), (r,), BatchShape(((0, 8),), 0, 0, 1))
    with pytest.raises(AssertionError, match="over-allocated"):
        engine_state.start_step(st_, bad, 0.0)

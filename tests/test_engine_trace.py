"""Exact event traces of two requests through a replica, with a constant 0.125 s step.

Arrivals come from a constant process at 8/s (0.125 s and 0.25 s). Times are exact binary fractions, so the
whole log can be compared with ``==``. An arrival at the same instant as a step's end is queued before the
replica plans its next step (its event was scheduled first; SimPy fires same-time events in FIFO order).
"""

from __future__ import annotations

from itertools import pairwise

from sim import simulate
from tests.conftest import scenario

TWO_REQUESTS = {
    "workload": {
        "arrival": {"process": "constant", "rate_per_s": 8.0},
        "num_requests": 2,
        "prompt_tokens": {"dist": "fixed", "tokens": 10},
        "output_tokens": {"dist": "fixed", "tokens": 3},
    },
    "pools": {"p": {"perf": {"step_s": 0.125}, "engine": {"max_num_batched_tokens": 8}}},
    "run": {"trace_events": True},
}


def test_chunked_prefill_and_decode_trace():
    res = simulate(scenario(TWO_REQUESTS), seed=0)
    assert res.events == [
        (0.125, 0, "arrive", 10),
        (0.125, 0, "prefill", 8),
        (0.25, 1, "arrive", 10),
        (0.25, 0, "prefill", 2),
        (0.25, 1, "prefill", 6),
        (0.375, 0, "first_token", 1),
        (0.375, 0, "token", 1),
        (0.375, 0, "decode", 1),
        (0.375, 1, "prefill", 4),
        (0.5, 0, "token", 2),
        (0.5, 1, "first_token", 1),
        (0.5, 1, "token", 1),
        (0.5, 0, "decode", 1),
        (0.5, 1, "decode", 1),
        (0.625, 0, "token", 3),
        (0.625, 1, "token", 2),
        (0.625, 0, "finish", 3),
        (0.625, 1, "decode", 1),
        (0.75, 1, "token", 3),
        (0.75, 1, "finish", 3),
    ]
    df = res.requests.set_index("request_id")
    assert df.loc[0, ["first_token_s", "finish_s", "queue_s"]].tolist() == [0.375, 0.625, 0.0]
    assert df.loc[1, ["first_token_s", "finish_s", "queue_s"]].tolist() == [0.5, 0.75, 0.0]
    assert df.loc[0, "tpot_s"] == 0.125 and df.loc[1, "tpot_s"] == 0.125
    assert res.summary["duration_s"] == 0.75


def test_preemption_by_recompute_trace():
    patch = {
        "workload": {
            "arrival": {"process": "constant", "rate_per_s": 8.0},
            "num_requests": 2,
            "prompt_tokens": {"dist": "fixed", "tokens": 8},
            "output_tokens": {"dist": "fixed", "tokens": 6},
        },
        "pools": {"p": {
            "perf": {"step_s": 0.125},
            "engine": {"block_size": 4, "num_gpu_blocks_override": 5, "max_model_len": 20},
        }},
        "run": {"trace_events": True},
    }
    res = simulate(scenario(patch), seed=0)
    ev = res.events
    # Request 1 is admitted at 0.25, gets its first token at 0.375, and is preempted there: it is the most
    # recently admitted and its decode needs a third block while none is free.
    assert (0.375, 1, "preempt", 1) in ev
    # It waits until request 0 finishes and frees its 4 blocks, then recomputes prompt + 1 generated token.
    assert (0.875, 0, "finish", 6) in ev
    assert (0.875, 1, "prefill", 9) in ev
    assert ev[-1] == (1.5, 1, "finish", 6)
    df = res.requests.set_index("request_id")
    assert df.loc[0, ["first_token_s", "finish_s", "preemptions"]].tolist() == [0.25, 0.875, 0]
    assert df.loc[1, ["first_token_s", "finish_s", "preemptions"]].tolist() == [0.375, 1.5, 1]
    assert res.summary["requests"]["preemptions"] == 1


def test_token_events_recover_every_token_time():
    """With ``trace_events`` every output token has a ``token`` event, in both stepping modes: per-token times
    (and so inter-token latencies) are recoverable, and agree with the records."""
    patch = {
        "workload": {"num_requests": 30, "arrival": {"process": "poisson", "rate_per_s": 20.0},
                     "output_tokens": {"dist": "uniform", "low": 2, "high": 60}},
        "pools": {"p": {"perf": {"model": "kernel"}}},
        "run": {"trace_events": True},
    }
    for mode in ("iteration", "fast"):
        res = simulate(scenario({**patch, "pools": {"p": {"perf": {"model": "kernel"},
                                                          "engine": {"stepping": mode}}}}), seed=3)
        tokens = {}
        for t, rid, kind, value in res.events:
            if kind == "token":
                tokens.setdefault(rid, []).append((value, t))
        for row in res.requests.itertuples():
            seq = sorted(tokens[row.request_id])
            assert [v for v, _ in seq] == list(range(1, row.output_tokens + 1))
            times = [t for _, t in seq]
            assert times[0] == row.first_token_s and times[-1] == row.finish_s
            assert max(b - a for a, b in pairwise(times)) == row.max_itl_s


def test_request_longer_than_max_model_len_is_rejected_with_reason():
    patch = {
        "workload": {"num_requests": 3, "prompt_tokens": {"dist": "fixed", "tokens": 4000},
                     "output_tokens": {"dist": "fixed", "tokens": 200}},
        "run": {"trace_events": True},
    }
    res = simulate(scenario(patch), seed=0)
    assert res.requests["status"].tolist() == ["rejected"] * 3
    assert set(res.requests["reject_reason"]) == {"exceeds_max_model_len"}
    assert res.summary["requests"]["rejected"] == 3


def test_max_duration_leaves_requests_in_flight_and_accounts_for_them():
    patch = {"workload": {"num_requests": 200, "arrival": {"rate_per_s": 50.0}}, "run": {"max_duration_s": 2.0}}
    res = simulate(scenario(patch), seed=1)
    counts = res.summary["requests"]
    assert counts["in_flight"] > 0
    assert counts["arrived"] == counts["finished"] + counts["rejected"] + counts["in_flight"]
    assert res.summary["duration_s"] == 2.0
    assert (res.requests["arrival_s"] <= 2.0).all()

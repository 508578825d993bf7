"""Disaggregated prefill/decode serving (Splitwise / DistServe style): prefill pools produce the first token and
hand the prompt's KV cache over a link to a decode pool of the same model.

Exact event traces with constant steps (prefill pool 1/64 s, decode pool 1/8 s), the link's FIFO arithmetic,
request conservation under interruptions and clock limits, fast stepping equal to per-step stepping, and the
configuration rules.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import simulate
from sim.catalog import load_catalog
from sim.engine.sizing import kv_bytes_per_token
from sim.errors import ScenarioError
from tests.conftest import scenario
from tests.test_fast_forward import assert_same, both_modes

POOL = {"gpu": "h100_sxm", "model": "llama-3.1-8b", "engine": {"max_model_len": 4096}}
#: Bytes of one Llama-3.1-8B token's KV cache in bf16: 2 x 32 layers x 8 KV heads x 128 x 2 bytes.
KV_BYTES = 131072


def disaggregated(patch: dict | None = None, bandwidth_gb_s: float = 1.0, latency_s: float = 0.0) -> dict:
    base = {
        "workload": {"arrival": {"process": "constant", "rate_per_s": 8.0}, "num_requests": 2,
                     "prompt_tokens": {"dist": "fixed", "tokens": 10}, "output_tokens": {"dist": "fixed", "tokens": 3}},
        "pools": {"p": {**POOL, "role": "prefill", "perf": {"model": "constant", "step_s": 1 / 64}},
                  "d": {**POOL, "role": "decode", "perf": {"model": "constant", "step_s": 1 / 8}}},
        "kv_transfer": {"bandwidth_gb_s": bandwidth_gb_s, "latency_s": latency_s},
        "run": {"trace_events": True},
    }
    for key, value in (patch or {}).items():
        base[key] = value
    return base


def test_kv_bytes_per_token_counts_every_layer_and_kv_head_once():
    model = load_catalog().models["llama-3.1-8b"]
    assert kv_bytes_per_token(model, "bf16") == KV_BYTES
    assert kv_bytes_per_token(model, "fp8") == KV_BYTES / 2


def test_prefill_then_transfer_then_decode_trace():
    transfer_s = 10 * KV_BYTES / 1e9 + 0.002
    res = simulate(scenario(disaggregated(latency_s=0.002)), seed=0)
    first = 0.125 + 1 / 64
    arrive = first + transfer_s
    expected = [
        (0.125, 0, "arrive", 10),
        (0.125, 0, "prefill", 10),
        (first, 0, "first_token", 1),
        (first, 0, "token", 1),
        (first, 0, "finish", 1),  # the prefill replica's part ends with the first token
        (first, 0, "kv_transfer", 10),
        (arrive, 0, "decode", 1),
        (0.25, 1, "arrive", 10),
    ]
    events = res.events[:len(expected)]
    assert [e[1:] for e in events] == [e[1:] for e in expected]
    assert [e[0] for e in events] == pytest.approx([e[0] for e in expected], abs=1e-12)
    df = res.requests.set_index("request_id")
    assert df.loc[0, "pool"] == "d" and df.loc[0, "output_tokens"] == 3
    assert df.loc[0, "ttft_s"] == pytest.approx(1 / 64, abs=1e-12)
    assert df.loc[0, "kv_transfer_s"] == pytest.approx(transfer_s, abs=1e-12)
    # Two decode steps after the KV cache arrives: tokens 2 and 3.
    assert df.loc[0, "finish_s"] == pytest.approx(arrive + 2 / 8, abs=1e-12)
    assert res.summary["kv_transfer_s"]["mean"] == pytest.approx(transfer_s, abs=1e-12)
    assert res.summary["requests"]["finished"] == 2


def test_hand_offs_wait_for_the_link_in_fifo_order():
    """Two prompts prefilled back to back on one replica: the second hand-off waits for the first's transfer."""
    patch = {"workload": {"arrival": {"process": "constant", "rate_per_s": 1000.0}, "num_requests": 2,
                          "prompt_tokens": {"dist": "fixed", "tokens": 100},
                          "output_tokens": {"dist": "fixed", "tokens": 2}}}
    sc = scenario(disaggregated(patch, bandwidth_gb_s=0.1, latency_s=0.01))
    res = simulate(sc, seed=0)
    df = res.requests.set_index("request_id")
    one = 100 * KV_BYTES / 0.1e9
    first = df["first_token_s"].tolist()
    assert first[1] < first[0] + one  # the second hand-off comes while the first is still on the link
    assert df.loc[0, "kv_transfer_s"] == pytest.approx(one + 0.01, rel=1e-12)
    assert df.loc[1, "kv_transfer_s"] == pytest.approx(first[0] + 2 * one + 0.01 - first[1], rel=1e-12)


def test_one_token_outputs_finish_on_the_prefill_pool():
    patch = {"workload": {"arrival": {"process": "constant", "rate_per_s": 8.0}, "num_requests": 3,
                          "prompt_tokens": {"dist": "fixed", "tokens": 10},
                          "output_tokens": {"dist": "fixed", "tokens": 1}}}
    res = simulate(scenario(disaggregated(patch)), seed=0)
    assert set(res.requests["pool"]) == {"p"}
    assert res.requests["kv_transfer_s"].isna().all()
    assert "kv_transfer_s" not in res.summary


@st.composite
def fleets(draw):
    kernel = {"model": "kernel"}
    patch = {
        "workload": {"type": "open_loop", "arrival": {"process": "poisson", "rate_per_s": draw(st.floats(1, 80))},
                     "num_requests": draw(st.integers(1, 120)),
                     "prompt_tokens": {"dist": "uniform", "low": 1, "high": draw(st.integers(1, 3000))},
                     "output_tokens": {"dist": "uniform", "low": 1, "high": draw(st.integers(1, 300))}},
        "pools": {"p": {**POOL, "role": "prefill", "replicas": draw(st.integers(1, 3)), "perf": kernel},
                  "d": {**POOL, "role": "decode", "replicas": draw(st.integers(1, 3)), "perf": kernel,
                        "engine": {"max_model_len": 4096, "num_gpu_blocks_override": draw(st.integers(260, 2000)),
                                   "max_num_seqs": draw(st.integers(1, 64))}}},
        "kv_transfer": {"bandwidth_gb_s": draw(st.floats(0.5, 400)), "latency_s": draw(st.floats(0, 0.01))},
        "router": {"policy": draw(st.sampled_from(["round_robin", "least_outstanding", "power_of_two"]))},
        "run": {"trace_events": draw(st.booleans())},
    }
    if draw(st.booleans()):
        patch["run"]["max_duration_s"] = draw(st.floats(0.05, 10))
    return scenario(disaggregated(patch)), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_every_request_is_accounted_for_and_fast_equals_per_step(case):
    sc, seed = case
    sc = sc.model_copy(update={"seed": seed})
    per_step, fast = both_modes(sc)
    assert_same(per_step, fast)
    req = fast.requests
    counts = fast.summary["requests"]
    assert counts["arrived"] == len(req) <= sc.workload.num_requests
    if sc.run.max_duration_s is None:
        assert counts["arrived"] == sc.workload.num_requests and counts["in_flight"] == 0
    assert counts["finished"] + counts["rejected"] + counts["in_flight"] == counts["arrived"]
    # Every record shows the request's real output length, whatever stage it was at.
    assert req["output_tokens"].between(1, sc.workload.output_tokens.high).all()
    done = req[req["status"] == "finished"]
    assert (done.loc[done["output_tokens"] > 1, "pool"] == "d").all()
    assert done.loc[done["output_tokens"] > 1, "kv_transfer_s"].notna().all()
    assert ((done["finish_s"] - done["first_token_s"]) >= done["kv_transfer_s"].fillna(0) - 1e-12).all()


def test_interrupted_requests_restart_from_the_prefill_pool():
    """Spot reclaims on both pools: requests restart from scratch (a fresh prefill) and all finish."""
    spot = {"reclaims_per_gpu_hour": 60.0, "notice_s": 0.0}
    patch = {"workload": {"arrival": {"process": "poisson", "rate_per_s": 20.0}, "num_requests": 400,
                          "prompt_tokens": {"dist": "uniform", "low": 100, "high": 2000},
                          "output_tokens": {"dist": "uniform", "low": 50, "high": 400}},
             "pools": {"p": {**POOL, "role": "prefill", "replicas": 3, "perf": {"model": "kernel"}, "spot": spot,
                             "price": {"tier": "spot"}},
                       "d": {**POOL, "role": "decode", "replicas": 3, "perf": {"model": "kernel"}, "spot": spot,
                             "price": {"tier": "spot"}}},
             "run": {}}
    res = simulate(scenario(disaggregated(patch, bandwidth_gb_s=50.0)), seed=5)
    counts = res.summary["requests"]
    assert counts["finished"] + counts["rejected"] + counts["in_flight"] == 400
    assert counts["interrupted"] > 0
    assert counts["finished"] == 400


@pytest.mark.parametrize(("pools", "kv", "message"), [
    ({"p": {"role": "prefill"}, "d": {"role": "decode"}, "x": {}}, True, "pools \\['x'\\] have role both"),
    ({"p": {"role": "prefill"}, "d": {"role": "prefill"}}, True, "no pool of role decode"),
    ({"p": {"role": "prefill"}, "d": {"role": "decode"}}, False, "kv_transfer .* is needed"),
])
def test_configuration_errors_name_the_rule(pools, kv, message):
    data = {"pools": {name: {**POOL, "perf": {"model": "constant", "step_s": 0.01}, **cfg} for name, cfg in
                      pools.items()}}
    data["kv_transfer"] = {"bandwidth_gb_s": 10.0} if kv else None
    with pytest.raises(ScenarioError, match=message):
        scenario(disaggregated(data))


def test_lengths_each_stage_cannot_take_are_rejected_not_stranded():
    """Prefill pool 2,048 tokens, decode pool 4,096: a 1,000 + 1,500 request is prefilled (it needs 1,001 there) and
    decoded; a 3,000 + 10 prompt fits no prefill pool and is rejected at arrival, with its reason."""
    def run(prompt, output, prefill_len=2048, decode_len=4096):
        patch = {"workload": {"arrival": {"process": "constant", "rate_per_s": 8.0}, "num_requests": 3,
                              "prompt_tokens": {"dist": "fixed", "tokens": prompt},
                              "output_tokens": {"dist": "fixed", "tokens": output}},
                 "pools": {"p": {**POOL, "role": "prefill", "engine": {"max_model_len": prefill_len},
                                 "perf": {"model": "constant", "step_s": 0.01}},
                           "d": {**POOL, "role": "decode", "engine": {"max_model_len": decode_len},
                                 "perf": {"model": "constant", "step_s": 0.01}}}}
        return simulate(scenario(disaggregated(patch)), seed=0)
    assert run(1000, 1500).summary["requests"]["finished"] == 3
    res = run(3000, 10)
    assert res.summary["requests"]["rejected"] == 3
    assert set(res.requests["reject_reason"]) == {"exceeds_max_model_len"}
    res = run(1000, 1500, prefill_len=4096, decode_len=2048)  # the decode pool is too short
    assert set(res.requests["reject_reason"]) == {"exceeds_max_model_len"}


def test_a_stage_without_replicas_rejects_at_arrival():
    patch = {"pools": {"p": {**POOL, "role": "prefill", "perf": {"model": "constant", "step_s": 0.01}},
                       "d": {**POOL, "role": "decode", "replicas": 0, "perf": {"model": "constant", "step_s": 0.01}}}}
    res = simulate(scenario(disaggregated(patch)), seed=0)
    assert res.summary["requests"]["rejected"] == 2 and set(res.requests["reject_reason"]) == {"no_replicas"}


def test_a_latency_autoscaler_on_the_prefill_pool_reads_its_ttft():
    patch = {"workload": {"arrival": {"process": "poisson", "rate_per_s": 30.0}, "num_requests": 600,
                          "prompt_tokens": {"dist": "fixed", "tokens": 3000},
                          "output_tokens": {"dist": "fixed", "tokens": 20}},
             "pools": {"p": {**POOL, "role": "prefill", "perf": {"model": "kernel"},
                             "autoscale": {"policy": "hpa", "max_replicas": 4,
                                           "metrics": [{"name": "ttft_p90_s", "target": 0.5}]}},
                       "d": {**POOL, "role": "decode", "perf": {"model": "kernel"}}},
             "run": {}}
    res = simulate(scenario(disaggregated(patch, bandwidth_gb_s=50.0)), seed=0)
    readings = res.scaling[res.scaling["pool"] == "p"]["value"]
    assert readings.notna().any() and readings.max() > 0.5
    assert res.scaling[res.scaling["pool"] == "p"]["desired"].max() > 1


def test_a_kv_cache_arriving_at_a_decode_step_end_joins_the_next_step_in_both_modes():
    """Constant 1/8 s steps and a 1/8 s hand-off latency put arrivals exactly on decode step ends."""
    patch = {"workload": {"arrival": {"process": "constant", "rate_per_s": 4.0}, "num_requests": 12,
                          "prompt_tokens": {"dist": "uniform", "low": 1, "high": 40},
                          "output_tokens": {"dist": "uniform", "low": 1, "high": 30}},
             "pools": {"p": {**POOL, "role": "prefill", "perf": {"model": "constant", "step_s": 0.125}},
                       "d": {**POOL, "role": "decode", "perf": {"model": "constant", "step_s": 0.125}}},
             "router": {"policy": "round_robin"}}
    assert_same(*both_modes(scenario(disaggregated(patch, bandwidth_gb_s=1e15, latency_s=0.125))))


def test_a_restarted_request_looks_its_prefix_up_again():
    patch = {"workload": {"arrival": {"process": "poisson", "rate_per_s": 20.0}, "num_requests": 600,
                          "prompt_tokens": {"dist": "uniform", "low": 600, "high": 1200},
                          "output_tokens": {"dist": "uniform", "low": 50, "high": 300},
                          "shared_prefix": {"tokens": 512, "groups": 1}},
             "pools": {"p": {**POOL, "role": "prefill", "replicas": 2, "perf": {"model": "kernel"}},
                       "d": {**POOL, "role": "decode", "replicas": 3, "perf": {"model": "kernel"},
                             "spot": {"reclaims_per_gpu_hour": 60.0, "notice_s": 0.0}, "price": {"tier": "spot"}}},
             "run": {}}
    req = simulate(scenario(disaggregated(patch, bandwidth_gb_s=50.0)), seed=5).requests
    restarted = req[req["interruptions"] > 0]
    assert len(restarted) > 0
    assert (restarted["cached_tokens"] == 512).all()

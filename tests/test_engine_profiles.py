"""Engine profiles (sim/engine/profiles): each serving stack's scheduler, defaults and efficiency set.

Exact event traces (constant 0.125 s steps, arrivals at 8/s) of the three batch-formation policies the profiles add
beside vLLM V1's: prefill-first (vLLM V0, TGI, SGLang), no-evict admission (TensorRT-LLM) and request-level static
batches with a queue delay (Triton); the efficiency set's arithmetic; every profile runs; and the TensorRT-LLM
profile's fitted figures are reproducible from the measured rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim import simulate
from sim.catalog import load_catalog
from sim.config import EngineConfig, KernelPerf
from sim.engine.profiles import engine_profiles
from sim.engine.scheduler import SCHEDULERS
from sim.engine.sizing import size_replica
from sim.perf import build_perf_model
from sim.perf import validation as v
from sim.perf.shape import BatchShape
from tests.conftest import scenario

SUMMARY_KEYS = ("ttft_median_ape_pct", "ttft_p90_ape_pct", "tpot_median_ape_pct", "tpot_p90_ape_pct")


def run(engine: dict, n: int = 2, output_tokens: int = 3):
    sc = scenario({"workload": {"arrival": {"process": "constant", "rate_per_s": 8.0}, "num_requests": n,
                                "prompt_tokens": {"dist": "fixed", "tokens": 10},
                                "output_tokens": {"dist": "fixed", "tokens": output_tokens}},
                   "pools": {"p": {"perf": {"step_s": 0.125}, "engine": engine}}, "run": {"trace_events": True}})
    return simulate(sc, seed=0)


def test_prefill_first_pauses_decoding_for_a_new_prompt():
    res = run({"scheduler": "prefill_first", "enable_chunked_prefill": False, "max_num_batched_tokens": 16,
               "max_model_len": 16})
    assert res.events == [
        (0.125, 0, "arrive", 10),
        (0.125, 0, "prefill", 10),
        (0.25, 1, "arrive", 10),
        (0.25, 0, "first_token", 1),
        (0.25, 0, "token", 1),
        (0.25, 1, "prefill", 10),  # request 0 does not decode in this step
        (0.375, 1, "first_token", 1),
        (0.375, 1, "token", 1),
        (0.375, 0, "decode", 1),
        (0.375, 1, "decode", 1),
        (0.5, 0, "token", 2),
        (0.5, 1, "token", 2),
        (0.5, 0, "decode", 1),
        (0.5, 1, "decode", 1),
        (0.625, 0, "token", 3),
        (0.625, 1, "token", 3),
        (0.625, 0, "finish", 3),
        (0.625, 1, "finish", 3),
    ]
    df = res.requests.set_index("request_id")
    assert df.loc[0, "max_itl_s"] == 0.25  # the paused step is a gap of two steps between its tokens 1 and 2


def test_prefill_first_with_chunks_prefills_before_decoding():
    """SGLang-like: a prompt part-way through its prefill goes on before any decode."""
    res = run({"profile": "sglang", "max_num_batched_tokens": 4, "max_model_len": 16})
    kinds = [(t, rid, kind, n) for t, rid, kind, n in res.events if kind in ("prefill", "decode")]
    assert kinds[:6] == [(0.125, 0, "prefill", 4), (0.25, 0, "prefill", 4), (0.375, 0, "prefill", 2),
                         (0.375, 1, "prefill", 2), (0.5, 1, "prefill", 4), (0.625, 1, "prefill", 4)]
    assert (0.75, 0, "decode", 1) in kinds  # request 0 waits for request 1's whole prompt


def test_no_evict_admits_only_what_the_cache_holds_to_the_end():
    """Blocks of 4 tokens, 8 blocks: each request needs 5 blocks to its end (10 + 8 tokens). vLLM V1 admits both and
    preempts; TensorRT-LLM's policy admits the second when the first has finished, and preempts nothing."""
    engine = {"max_num_batched_tokens": 32, "max_model_len": 32, "block_size": 4, "num_gpu_blocks_override": 8}
    v1 = run(engine, output_tokens=8)
    assert v1.requests["preemptions"].sum() > 0
    res = run({**engine, "profile": "trtllm"}, output_tokens=8)
    df = res.requests.set_index("request_id")
    assert df["preemptions"].tolist() == [0, 0]
    assert df.loc[0, "finish_s"] == 0.125 + 8 * 0.125
    start_1 = next(t for t, rid, kind, _ in res.events if rid == 1 and kind == "prefill")
    assert start_1 == df.loc[0, "finish_s"]
    assert df.loc[1, "finish_s"] == start_1 + 8 * 0.125


def test_static_batches_wait_for_a_full_batch_and_run_to_their_end():
    res = run({"profile": "triton", "max_num_seqs": 2, "batch_delay_s": 0.2, "max_model_len": 16}, n=3)
    steps = [(t, rid, kind) for t, rid, kind, _ in res.events if kind in ("prefill", "decode")]
    # Request 0 waits for request 1 (the batch is full at 0.25); request 2 (0.375) waits for the batch's end.
    assert steps[:2] == [(0.25, 0, "prefill"), (0.25, 1, "prefill")]
    assert (0.625, 2, "prefill") in steps
    assert not any(rid == 2 for t, rid, _ in steps if t < 0.625)
    df = res.requests.set_index("request_id")
    assert df["finish_s"].tolist() == [0.625, 0.625, 1.0]


def test_static_batch_starts_when_the_oldest_request_has_waited_the_delay():
    res = run({"profile": "triton", "max_num_seqs": 4, "batch_delay_s": 0.2, "max_model_len": 16}, n=1)
    first = next(t for t, _, kind, _ in res.events if kind == "prefill")
    assert first == pytest.approx(0.125 + 0.2, abs=1e-12)


@pytest.mark.parametrize("name", sorted(engine_profiles()))
def test_every_profile_runs_and_accounts_for_every_request(name):
    profile = engine_profiles()[name]
    assert profile.scheduler in SCHEDULERS
    assert EngineConfig(profile=name).scheduler == profile.scheduler
    sc = scenario({"workload": {"arrival": {"process": "poisson", "rate_per_s": 20.0}, "num_requests": 60,
                                "prompt_tokens": {"dist": "uniform", "low": 10, "high": 400},
                                "output_tokens": {"dist": "uniform", "low": 1, "high": 100}},
                   "pools": {"p": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "perf": {"model": "kernel"},
                                   "engine": {"profile": name, "max_model_len": 4096}}}})
    res = simulate(sc, seed=3)
    assert res.summary["requests"]["finished"] == 60
    assert (res.requests["status"] == "finished").all() and res.requests["tpot_s"].notna().any()


def test_scenario_fields_override_the_profile():
    eng = EngineConfig(profile="tgi", max_num_batched_tokens=2048, scheduler="vllm_v1")
    assert (eng.max_num_batched_tokens, eng.scheduler, eng.max_num_seqs) == (2048, "vllm_v1", 128)


def test_unknown_profile_is_an_error_naming_the_known_ones():
    with pytest.raises(ValueError,
                       match=r"unknown engine profile 'vllm2' \(did you mean 'vllm_v1'\?\); allowed: ollama, sglang"):
        EngineConfig(profile="vllm2")


def test_whole_prompt_budget_follows_vllm_v0():
    cat = load_catalog()
    sc = scenario({"pools": {"p": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "perf": {"model": "kernel"},
                                   "engine": {"profile": "vllm_v0", "max_model_len": 1000}}}})
    assert size_replica(cat.gpus["h100_sxm"], cat.models["llama-3.1-8b"], sc.pools["p"]).max_num_batched_tokens == 2048
    sc = scenario({"pools": {"p": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "perf": {"model": "kernel"},
                                   "engine": {"profile": "vllm_v0", "max_model_len": 5000}}}})
    assert size_replica(cat.gpus["h100_sxm"], cat.models["llama-3.1-8b"], sc.pools["p"]).max_num_batched_tokens == 5000


def _perf(**perf):
    cat = load_catalog()
    sc = scenario({"pools": {"p": {"gpu": "h100_sxm", "model": "llama-3.1-8b",
                                   "perf": {"model": "kernel", **perf}, "engine": {"max_model_len": 4096}}}})
    pool = sc.pools["p"]
    gpu, model = cat.gpus["h100_sxm"], cat.models["llama-3.1-8b"]
    return build_perf_model(pool, gpu, model, size_replica(gpu, model, pool))


@pytest.mark.parametrize("shape", [BatchShape(((0, 700),), 3, 900, 4), BatchShape((), 64, 64 * 800, 64)])
def test_efficiency_set_scales_gpu_time_and_overlaps_host_time(shape):
    host = {"step_overhead_s": 3e-3, "per_sequence_overhead_s": 1e-4, "eager_overhead_per_layer_s": 1e-4}
    gpu = _perf(step_overhead_s=0.0, per_sequence_overhead_s=0.0, eager_overhead_per_layer_s=0.0).step_time_s(shape)
    plain = _perf(**host).step_time_s(shape)
    host_s = plain - gpu
    assert host_s > 0
    assert _perf(**host, gpu_time_scale=0.7).step_time_s(shape) == pytest.approx(0.7 * gpu + host_s, rel=1e-12)
    assert _perf(**host, overlap_host=True).step_time_s(shape) == pytest.approx(max(gpu, host_s), rel=1e-12)
    fast = _perf(**host, gpu_time_scale=0.7, overlap_host=True)
    if not shape.prefill_chunks:  # a run of decodes priced at once gives the per-step prices
        n, kv = shape.n_decodes, shape.decode_kv_tokens
        runs = fast.decode_step_times_s(n, kv, 40)
        one = [fast.step_time_s(BatchShape((), n, kv + n * j, n)) for j in range(40)]
        np.testing.assert_allclose(runs, one, rtol=1e-12)


# -- the TensorRT-LLM profile's fit ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trt_rows():
    return v.load_rows(v.PROFILE_FITS["trtllm"][0])


@pytest.fixture(scope="module")
def trt_shipped():
    return v.read_step_overhead(v.PROFILE_FITS["trtllm"][2])


def test_trtllm_rows_are_the_measured_trtllm_rows(trt_rows):
    assert len(trt_rows) == 357
    assert set(trt_rows["backend"]) == {"trtllm"}
    assert set(trt_rows["model_path"]) == {"Qwen/Qwen3-32B", "meta-llama/Llama-3.1-8B-Instruct"}


def test_trtllm_fit_used_only_the_fit_half_and_the_better_harness(trt_rows, trt_shipped):
    fit, report = v.split_rows(trt_rows)
    assert trt_shipped["fitted_on"] == v.row_keys(fit)
    assert not set(trt_shipped["fitted_on"]) & set(v.row_keys(report))
    by = trt_shipped["objective"]["by_harness"]
    best = min(by, key=lambda h: h["value"])
    assert trt_shipped["harness"] == {k: val for k, val in best.items() if k != "value"}
    lo, hi = v.SCALE_BOUNDS
    assert lo <= trt_shipped["gpu_time_scale"] <= hi
    profile = engine_profiles()["trtllm"]
    assert profile.gpu_time_scale == trt_shipped["gpu_time_scale"]
    assert profile.overheads == {k: trt_shipped[k] for k in v.OVERHEAD_BOUNDS_S}


def test_trtllm_profile_uses_its_fitted_figures():
    perf = _perf()
    cat = load_catalog()
    sc = scenario({"pools": {"p": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "perf": KernelPerf().model_dump(),
                                   "engine": {"profile": "trtllm", "max_model_len": 4096}}}})
    pool = sc.pools["p"]
    gpu, model = cat.gpus["h100_sxm"], cat.models["llama-3.1-8b"]
    trt = build_perf_model(pool, gpu, model, size_replica(gpu, model, pool))
    profile = engine_profiles()["trtllm"]
    assert (trt.gpu_time_scale, trt.step_overhead_s) == (profile.gpu_time_scale, profile.overheads["step_overhead_s"])
    assert perf.gpu_time_scale == 1.0


def test_trtllm_report_half_errors_are_reproducible(trt_rows, trt_shipped):
    """Recompute every held-out row (about 20 s) and compare with what the profile's file records."""
    _, report = v.split_rows(trt_rows)
    fitted = {k: trt_shipped[k] for k in ("gpu_time_scale", *v.OVERHEAD_BOUNDS_S)}
    table = v.validation_table(report, {**fitted, **trt_shipped["harness"]}, trt_shipped["max_num_batched_tokens"],
                               "trtllm")
    result = v.summary(table)
    assert result["rows"] == trt_shipped["report"]["rows"] == len(report)
    for key in SUMMARY_KEYS:
        assert result[key] == pytest.approx(trt_shipped["report"][key], abs=1e-4), key


def test_means_are_affine_in_the_gpu_time_scale(trt_rows):
    row = trt_rows[(trt_rows["isl"] == 1024) & (trt_rows["osl"] == 128)].iloc[0]
    coeffs = v.affine_response(row, 8192, "trtllm")
    x = np.array([2e-3, 5e-5, 1e-4])
    direct = v.simulate_row(row, {"gpu_time_scale": 0.8, **dict(zip(v.OVERHEAD_BOUNDS_S, x, strict=True))}, 8192,
                            "trtllm")
    np.testing.assert_allclose(0.8 * coeffs[:, 0] + coeffs[:, 1:] @ x, direct, rtol=1e-9)

"""The calibrated kernel model: round trip, monotone step time, spec-sheet bounds, spec transfer."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.catalog import load_catalog
from sim.config import PoolConfig
from sim.engine.sizing import size_replica
from sim.perf import BatchShape, build_perf_model
from sim.perf.kernel import Calibration, KernelModel, shipped_calibrations
from sim.perf.transfer import transfer_source

CATALOG = load_catalog()
GPUS = ["h100_sxm", "l40s", "l4", "a100_80gb_sxm", "h200_sxm", "t4"]


def test_shipped_calibrations_are_the_measured_gpus():
    assert set(shipped_calibrations()) == {"h100_sxm", "l40s"}


@pytest.mark.parametrize(("gpu", "source"), [("h100_sxm", "h100_sxm"), ("l40s", "l40s"), ("l4", "l40s"),
                                             ("rtx_4090", "l40s"), ("h200_sxm", "h100_sxm"),
                                             ("a100_80gb_sxm", "h100_sxm"), ("a40", "l40s")])
def test_for_gpu_uses_own_calibration_or_the_documented_source(gpu, source):
    km = KernelModel.for_gpu(gpu)
    assert km.calibration.gpu == source
    assert km.gpu.key == gpu
    assert km.transferred == (gpu != source)


def test_uncalibrated_never_uses_the_gpus_own_data():
    assert KernelModel.for_gpu("h100_sxm", calibrated=False).calibration.gpu == "l40s"
    assert KernelModel.for_gpu("l40s", calibrated=False).calibration.gpu == "h100_sxm"
    assert KernelModel.for_gpu("l4", calibrated=False).calibration.gpu == "l40s"
    assert transfer_source(CATALOG.gpus["l4"], exclude="l40s") == "h100_sxm"


def test_calibration_round_trip_reproduces_predictions(tmp_path):
    km = KernelModel.for_gpu("h100_sxm")
    path = tmp_path / "cal.yaml"
    km.calibration.write(path)
    again = KernelModel(km.gpu, Calibration.read(path))
    for args in [(1, 4096, 4096, "bf16"), (300, 6144, 4096, "fp8"), (8192, 28672, 8192, "bf16")]:
        # Written with 4-decimal knot values: predictions agree to 1e-4 in log time.
        assert math.log(again.gemm_s(*args) / km.gemm_s(*args)) == pytest.approx(0, abs=2e-4)
    assert again.attention_decode_s(64, 2000, 32, 8, 128) == pytest.approx(km.attention_decode_s(64, 2000, 32, 8, 128),
                                                                           rel=1e-3)


@pytest.mark.parametrize("gpu", GPUS)
def test_operators_never_beat_the_spec_sheet(gpu):
    km = KernelModel.for_gpu(gpu)
    g = km.gpu
    bw = g.memory_bandwidth_gb_s * 1e9
    for m in (1, 7, 64, 500, 4096, 32768):
        n, k = 4096, 14336
        t = km.gemm_s(m, n, k, "bf16")
        assert t >= 2 * m * n * k / (g.bf16_tflops * 1e12)
        assert t >= n * k * 2 / bw
    for b, kv in [(1, 100), (64, 4000), (256, 30000)]:
        assert km.attention_decode_s(b, kv, 32, 8, 128) >= b * kv * 2 * 8 * 128 * 2 / bw
    flops = 4.0 * 32 * 128 * (4096 * 4097 / 2)
    assert km.attention_prefill_s(1, 4096, 32, 8, 128) >= flops / (g.bf16_tflops * 1e12)
    if g.interconnect_gb_s:
        assert km.allreduce_s(64e6, 8) >= 2 * 7 / 8 * 64e6 / (g.interconnect_gb_s * 1e9)


def step_model(gpu: str, model: str = "llama-3.1-8b", precision: str = "bf16", tp: int = 1):
    pool = PoolConfig(gpu=gpu, model=model, precision=precision, tensor_parallel=tp,
                      engine={"max_model_len": 4096})
    g, m = CATALOG.gpus[gpu], CATALOG.models[model]
    return build_perf_model(pool, g, m, size_replica(g, m, pool))


@pytest.mark.parametrize(("gpu", "precision"), [("h100_sxm", "bf16"), ("h100_sxm", "fp8"), ("l40s", "bf16"),
                                                ("l4", "fp8"), ("a100_80gb_sxm", "int4")])
@settings(max_examples=120, deadline=None)
@given(chunk=st.integers(1, 8192), cached=st.integers(0, 16384), decodes=st.integers(0, 512),
       kv=st.integers(1, 16384), extra=st.integers(1, 2048))
def test_more_work_never_takes_less_time(gpu, precision, chunk, cached, decodes, kv, extra):
    perf = step_model(gpu, precision=precision)
    base = BatchShape(((cached, chunk),), decodes, decodes * kv, decodes + 1)
    t = perf.step_time_s(base)
    assert perf.step_time_s(BatchShape(((cached, chunk + extra),), decodes, decodes * kv, decodes + 1)) >= t
    assert perf.step_time_s(BatchShape(((cached + extra, chunk),), decodes, decodes * kv, decodes + 1)) >= t
    assert perf.step_time_s(BatchShape(((cached, chunk),), decodes, decodes * (kv + extra), decodes + 1)) >= t
    assert perf.step_time_s(BatchShape(((cached, chunk),), decodes + extra, (decodes + extra) * kv,
                                       decodes + extra + 1)) >= t


def test_decode_step_magnitude_on_h100():
    # Llama-3.1-8B bf16, batch 1: ~16 GB of weights at ~80% of 3.35 TB/s is ~6 ms, plus CPU overhead.
    t = step_model("h100_sxm").step_time_s(BatchShape((), 1, 1000, 1))
    assert 5e-3 < t < 12e-3


def test_l4_is_slower_than_l40s_is_slower_than_h100():
    shape = BatchShape(((0, 2048),), 16, 16 * 1500, 17)
    times = [step_model(g, precision="fp8").step_time_s(shape) for g in ("h100_sxm", "l40s", "l4")]
    assert times[0] < times[1] < times[2]

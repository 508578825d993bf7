"""The first-version step model: monotone, never faster than the spec sheet allows, sensible magnitudes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.catalog import load_catalog
from sim.config import ConstantPerf, PoolConfig
from sim.engine.sizing import size_replica, weight_bytes
from sim.perf import BatchShape, build_perf_model
from sim.perf.step import ConstantStepModel

CATALOG = load_catalog()


def step_model(gpu="h100_sxm", model="llama-3.1-8b", precision="bf16", tp=1):
    pool = PoolConfig(gpu=gpu, model=model, precision=precision, tensor_parallel=tp,
                      engine={"max_model_len": 4096})
    g, m = CATALOG.gpus[gpu], CATALOG.models[model]
    return build_perf_model(pool, g, m, size_replica(g, m, pool)), g, m


def test_constant_model():
    m = ConstantStepModel(ConstantPerf(step_s=0.5, per_token_s=0.01))
    assert m.step_time_s(BatchShape(((0, 10),), 2, 30, 3)) == pytest.approx(0.5 + 0.12)


def test_single_decode_is_weight_bandwidth_bound():
    perf, gpu, model = step_model()
    t = perf.step_time_s(BatchShape((), 1, 1000, 1))
    floor = weight_bytes(model, "bf16") / (gpu.memory_bandwidth_gb_s * 1e9)
    assert floor < t < 2.5 * floor + 3e-3  # about 4.8 ms of weights at full bandwidth, plus overhead


@settings(max_examples=200, deadline=None)
@given(
    chunk=st.integers(1, 8192), cached=st.integers(0, 8192), decodes=st.integers(0, 256),
    kv=st.integers(1, 8192), extra=st.integers(1, 512),
)
def test_more_work_never_takes_less_time(chunk, cached, decodes, kv, extra):
    perf, _, _ = step_model()
    base = BatchShape(((cached, chunk),), decodes, decodes * kv, decodes + 1)
    bigger_chunk = BatchShape(((cached, chunk + extra),), decodes, decodes * kv, decodes + 1)
    longer_context = BatchShape(((cached + extra, chunk),), decodes, decodes * (kv + extra), decodes + 1)
    more_decodes = BatchShape(((cached, chunk),), decodes + extra, (decodes + extra) * kv, decodes + extra + 1)
    t = perf.step_time_s(base)
    assert perf.step_time_s(bigger_chunk) >= t
    assert perf.step_time_s(longer_context) >= t
    assert perf.step_time_s(more_decodes) >= t


@pytest.mark.parametrize(("gpu", "precision"), [("h100_sxm", "bf16"), ("h100_sxm", "fp8"), ("l4", "fp8"),
                                                 ("l40s", "bf16"), ("a100_80gb_sxm", "int4")])
def test_never_faster_than_the_spec_sheet(gpu, precision):
    perf, g, m = step_model(gpu=gpu, precision=precision)
    tokens = 4096
    t = perf.step_time_s(BatchShape(((0, tokens),), 0, 0, 1))
    gemm_flops = 2 * tokens * (m.n_params - 2 * m.vocab_size * m.hidden_size)
    peak = max(g.bf16_tflops, g.fp8_tflops or 0, g.int8_tops or 0) * 1e12
    assert t >= gemm_flops / peak
    assert t >= weight_bytes(m, precision) / (g.memory_bandwidth_gb_s * 1e9)


def test_tensor_parallelism_speeds_up_a_large_prefill():
    shape = BatchShape(((0, 4096),), 0, 0, 1)
    t1 = step_model(model="llama-3.1-70b", gpu="h100_sxm", tp=4)[0].step_time_s(shape)
    t2 = step_model(model="llama-3.1-70b", gpu="h100_sxm", tp=8)[0].step_time_s(shape)
    assert t2 < t1


def test_fp8_decode_is_faster_than_bf16_on_h100():
    shape = BatchShape((), 8, 8 * 1000, 8)
    assert step_model(precision="fp8")[0].step_time_s(shape) < step_model(precision="bf16")[0].step_time_s(shape)


def test_allreduce_only_with_tensor_parallelism():
    ops = step_model()[0].ops
    assert ops.allreduce_s(1e6, 1) == 0.0
    assert ops.allreduce_s(1e6, 2) > 0.0


def test_eager_overhead_only_above_the_cudagraph_capture_size():
    pool = PoolConfig(gpu="h100_sxm", model="llama-3.1-8b", engine={"max_model_len": 4096},
                      perf={"model": "kernel", "step_overhead_s": 0.0, "per_sequence_overhead_s": 0.0,
                            "eager_overhead_per_layer_s": 0.0, "cudagraph_max_tokens": 512})
    g, m = CATALOG.gpus["h100_sxm"], CATALOG.models["llama-3.1-8b"]
    eager_pool = pool.model_copy(update={"perf": pool.perf.model_copy(update={"eager_overhead_per_layer_s": 1e-4})})
    plain = build_perf_model(pool, g, m, size_replica(g, m, pool))
    eager = build_perf_model(eager_pool, g, m, size_replica(g, m, pool))
    at_cap = BatchShape(((0, 512),), 0, 0, 1)
    above = BatchShape(((0, 513),), 0, 0, 1)
    assert eager.step_time_s(at_cap) == plain.step_time_s(at_cap)
    assert eager.step_time_s(above) == pytest.approx(plain.step_time_s(above) + 1e-4 * m.n_layers, rel=1e-12)


def test_grid_sections_equal_the_scalar_lookup_bit_for_bit():
    """``LogGrid.slice2`` is vectorised over the knot pairs; every value must equal :meth:`LogGrid.at` there,
    exactly (the compiled core and both engines price from these sections)."""
    import math

    from sim.perf.kernel import shipped_calibration

    for gpu in ("h100_sxm", "l40s"):
        cal = shipped_calibration(gpu)
        for heads, kv_heads, head_dim in [(32, 8, 128), (64, 8, 128), (12, 12, 64), (8, 1, 128)]:
            for family, (a, b), fixed in [
                ("attention_prefill", (0, 3), {1: math.log2(heads / kv_heads), 2: math.log2(kv_heads),
                                              4: math.log2(head_dim)}),
                ("attention_decode", (0, 2), {1: math.log2(kv_heads), 3: math.log2(head_dim)})]:
                grid = getattr(cal, family)["bf16"].correction
                section = grid.slice2(a, b, fixed)
                for i, xa in enumerate(grid.knots[a]):
                    for j, xb in enumerate(grid.knots[b]):
                        point = [fixed.get(axis, 0.0) for axis in range(len(grid.knots))]
                        point[a], point[b] = xa, xb
                        assert section.values[i][j] == grid.at(*point)


@pytest.mark.parametrize("compiled", [True, False])
def test_table_maths_is_the_c_librarys_on_every_machine(compiled, monkeypatch):
    """Decode tables and decode runs take exp, log2 and exp2 from the C library (as ``math`` does), not numpy's
    SIMD code, whose last bits may differ between CPUs; with or without the compiled extension."""
    import math

    from sim import libm

    if not compiled:
        monkeypatch.setattr(libm, "_libm", None)
    elif libm._libm is None:
        pytest.skip("the compiled extension is not built")
    x = np.random.default_rng(3).uniform(-30, 30, 2000).reshape(40, 50)
    y = np.abs(x) + 1e-3
    assert libm.exp(x).tolist() == [[math.exp(v) for v in row] for row in x.tolist()]
    assert libm.log2(y).tolist() == [[math.log2(v) for v in row] for row in y.tolist()]
    assert libm.exp2(x).tolist() == [[math.exp2(v) for v in row] for row in x.tolist()]
    assert libm.cos(x).tolist() == [[math.cos(v) for v in row] for row in x.tolist()]
    assert libm.log(y).tolist() == [[math.log(v) for v in row] for row in y.tolist()]


def test_a_decode_table_row_does_not_depend_on_the_block_it_was_built_in():
    """Tables are built a block of batch sizes at a time; each row must equal the one built alone, bit for bit,
    whichever engine asks first."""
    from sim.perf.kernel import KernelModel

    kv = np.exp2(np.arange(15 * 64 + 1) / 64)
    block = KernelModel.for_gpu("h100_sxm").attention_decode_tables_s(list(range(33, 65)), kv, 32, 8, 128)
    alone = KernelModel(CATALOG.gpus["h100_sxm"], KernelModel.for_gpu("h100_sxm").calibration)  # fresh caches
    for b in (33, 40, 63, 64):
        assert block[b - 33].tolist() == alone.attention_decode_tables_s([b], kv, 32, 8, 128)[0].tolist()


@pytest.mark.parametrize("gpu", ["h100_sxm", "l40s", "l4"])  # l4: spec transfer
def test_decode_envelopes_equal_the_scalar_arithmetic_bit_for_bit(gpu):
    """The decode envelope's running maxima are evaluated for many batch sizes at once; each must equal the
    running maximum of the scalar raw time over the KV knots, exactly (both engines and the compiled core price
    from them), and ``Slice2.at_rows`` must equal ``Slice2.at`` point by point."""

    from sim.perf.kernel import KernelModel

    ops = KernelModel.for_gpu(gpu)
    name, curve = ops._attention_curve(ops.calibration.attention_decode, "bf16")
    heads = (32, 8, 128)
    key = ("decode", name, *heads, "bf16")
    batches = [1.0, 2.0, 3.0, 7.0, 48.0, 2.0**5.5, 100.0, 513.0]
    together = ops._kv_running_maxima(curve, key, batches, *heads, "bf16")
    for b, row in zip(batches, together, strict=True):
        raw = [ops._decode_raw(curve, b, 2.0**x, *heads, "bf16") for x in curve.correction.knots[2]]
        assert row == np.maximum.accumulate(raw).tolist()
    section = ops._slice(curve, "decode", *heads)
    xb = np.array([-3.0, 0.0, 4.2, 9.999, 12.5, 40.0])
    xa = [-1.0, 0.0, 3.3, 7.0, 30.0]
    assert section.at_rows(xa, xb).tolist() == [[section.at(a, b) for b in xb.tolist()] for a in xa]


@pytest.mark.parametrize("core", ["auto", "python"])
def test_runs_sharing_kernel_models_give_the_results_of_a_fresh_process(core, monkeypatch):
    """Step models of one GPU share its kernel model's envelopes and decode tables across runs; a run must give
    the same records whatever ran before it in the process (here: other models and table lengths first)."""
    from sim import simulate
    from sim.perf import kernel
    from tests.conftest import scenario

    def run(model: str, max_len: int, seed: int):
        sc = scenario({"seed": seed, "run": {"core": core}, "workload": {
            "num_requests": 150, "arrival": {"rate_per_s": 20.0},
            "prompt_tokens": {"low": 10, "high": 1500}, "output_tokens": {"low": 1, "high": 300}},
            "pools": {"p": {"gpu": "h100_sxm", "model": model, "replicas": 2, "engine": {"max_model_len": max_len},
                            "perf": {"model": "kernel"}}}})
        return simulate(sc).requests

    monkeypatch.setattr(kernel, "_SHARED", {})
    fresh = run("llama-3.1-8b", 4096, 1)
    assert len(kernel._SHARED) == 1
    monkeypatch.setattr(kernel, "_SHARED", {})
    run("llama-3.2-1b", 4096, 3)  # other heads, the same table length
    run("mistral-7b", 4096, 2)  # llama-3.1-8b's heads and table: its rows are the ones the last run reads
    run("llama-3.1-8b", 16384, 4)  # a longer table
    again = run("llama-3.1-8b", 4096, 1)
    assert len(kernel._SHARED) == 1
    pd.testing.assert_frame_equal(fresh, again, check_exact=True)


def test_shared_kernel_models_and_their_tables_stay_bounded(monkeypatch):
    """A long-lived sweep worker keeps at most SHARED_MODELS GPUs' models, each at most SHARED_ROW_SETS sets of
    decode-table rows, dropping the least recently used."""
    from sim.perf import kernel

    monkeypatch.setattr(kernel, "_SHARED", {})
    gpus = ["h100_sxm", "l40s", "l4", "a100_80gb_sxm", "h200_sxm", "a40"]
    models = [kernel.KernelModel.shared(CATALOG.gpus[g]) for g in gpus]
    assert len(kernel._SHARED) == kernel.SHARED_MODELS
    assert kernel.KernelModel.shared(CATALOG.gpus["a40"]) is models[-1]  # kept, and now the most recent
    assert kernel.KernelModel.shared(CATALOG.gpus["h100_sxm"]) is not models[0]  # dropped, made again
    ops = models[-1]
    first = ops.decode_rows((32, 8, 128, "bf16", 13))
    first[1] = np.zeros(3)
    for octaves in range(14, 14 + kernel.SHARED_ROW_SETS - 1):
        ops.decode_rows((32, 8, 128, "bf16", octaves))
    assert ops.decode_rows((32, 8, 128, "bf16", 13)) is first  # still held: eight sets
    ops.decode_rows((8, 8, 128, "bf16", 13))
    ops.decode_rows((8, 8, 128, "bf16", 14))  # the ninth and tenth drop the least recently used
    assert len(ops._rows) == kernel.SHARED_ROW_SETS
    assert ops.decode_rows((32, 8, 128, "bf16", 14)) == {}

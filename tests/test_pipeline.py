"""Pipeline parallelism (sim/perf PipelinedPerf): the textbook bubble formula, memory per stage, GPUs paid."""

from __future__ import annotations

import pytest

from sim import simulate
from sim.perf import BatchShape, PipelinedPerf
from tests.conftest import scenario


class Constant:
    def __init__(self, step_s):
        self.step_s = step_s

    def step_time_s(self, shape):
        return self.step_s


@pytest.mark.parametrize(("p", "m"), [(2, 2), (4, 4), (4, 8), (8, 2)])
def test_equal_microbatches_take_m_plus_p_minus_one_stage_times(p, m):
    pipe = PipelinedPerf(Constant(0.08), stages=p, microbatches=m, hop_s_per_token=0.0)
    shape = BatchShape((), 64, 64 * 500, 64)
    stage = 0.08 / p
    assert pipe.step_time_s(shape) == pytest.approx((m + p - 1) * stage)
    # The bubble: the idle share of each stage over the step.
    busy = m * stage
    assert 1 - busy / pipe.step_time_s(shape) == pytest.approx((p - 1) / (m + p - 1))


def test_microbatches_split_the_batch():
    pipe = PipelinedPerf(Constant(1.0), 3, 3, 0.0)
    parts = pipe.microbatch_shapes(BatchShape(((0, 100), (0, 50)), 7, 700, 8))
    assert [b.n_decodes for b in parts] == [3, 2, 2] and sum(b.decode_kv_tokens for b in parts) == 700
    assert [len(b.prefill_chunks) for b in parts] == [1, 1, 0] and sum(b.n_sampled for b in parts) == 8


def test_a_pipelined_replica_holds_more_kv_and_pays_for_every_stage():
    base = {"gpu": "l4", "model": "llama-3.1-8b", "precision": "fp8", "perf": {"model": "kernel"},
            "engine": {"max_model_len": 4096}, "price": {"usd_per_gpu_hour": 1.0}}
    one = simulate(scenario({"pools": {"p": base}}))
    two = simulate(scenario({"pools": {"p": {**base, "pipeline_parallel": 2}}}))
    assert two.summary["cost"]["usd_per_hour"] == pytest.approx(2.0)
    assert one.summary["cost"]["usd_per_hour"] == pytest.approx(1.0)
    assert (two.requests["status"] == "finished").all()
    from sim.catalog import load_catalog
    from sim.engine.sizing import size_replica

    gpu, model = load_catalog().gpus["l4"], load_catalog().models["llama-3.1-8b"]
    single = size_replica(gpu, model, scenario({"pools": {"p": base}}).pools["p"])
    staged = size_replica(gpu, model, scenario({"pools": {"p": {**base, "pipeline_parallel": 2}}}).pools["p"])
    assert staged.weight_bytes_per_gpu == pytest.approx(single.weight_bytes_per_gpu / 2)
    assert staged.kv_blocks > 2 * single.kv_blocks  # half the layers per GPU and more memory left for KV


def test_stages_must_divide_the_layers():
    from sim.errors import DeploymentError

    with pytest.raises(DeploymentError, match=r"pipeline_parallel.*does not divide the 32 layers"):
        scenario({"pools": {"p": {"pipeline_parallel": 3}}})

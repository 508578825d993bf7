"""Performance models: how long an engine step takes.

``build_perf_model`` turns a pool's ``perf`` block into a :class:`PerfModel` (registry ``PERF_MODELS``).
"""

from __future__ import annotations

from collections.abc import Callable

from sim.catalog import GpuSpec, ModelSpec
from sim.config import ConstantPerf, KernelPerf, PoolConfig, RooflinePerf
from sim.engine.sizing import ReplicaSizing
from sim.perf.roofline import RooflineOperators
from sim.perf.shape import BatchShape, PerfModel
from sim.perf.step import ConstantStepModel, TransformerStepModel


def _roofline(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    cfg = pool.perf
    assert isinstance(cfg, RooflinePerf)
    return TransformerStepModel(
        RooflineOperators(gpu, cfg),
        model,
        pool.tensor_parallel,
        pool.precision,
        sizing.kv_dtype,
        cfg.step_overhead_s,
        cfg.per_sequence_overhead_s,
    )


#: CPU scheduling overhead per step when neither the scenario nor the calibration gives one.
DEFAULT_STEP_OVERHEAD_S = 2e-3
DEFAULT_PER_SEQUENCE_OVERHEAD_S = 10e-6


def _kernel(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    from sim.perf.kernel import KernelModel

    cfg = pool.perf
    assert isinstance(cfg, KernelPerf)
    ops = KernelModel.for_gpu(gpu, calibrated=cfg.calibrated, calibration_file=cfg.calibration_file)
    cal = ops.calibration
    step = cfg.step_overhead_s
    if step is None:
        step = cal.step_overhead_s if cal.step_overhead_s is not None else DEFAULT_STEP_OVERHEAD_S
    per_seq = cfg.per_sequence_overhead_s
    if per_seq is None:
        per_seq = cal.per_sequence_overhead_s if cal.per_sequence_overhead_s is not None else (
            DEFAULT_PER_SEQUENCE_OVERHEAD_S)
    return TransformerStepModel(ops, model, pool.tensor_parallel, pool.precision, sizing.kv_dtype, step, per_seq)


def _constant(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    assert isinstance(pool.perf, ConstantPerf)
    return ConstantStepModel(pool.perf)


PERF_MODELS: dict[str, Callable[[PoolConfig, GpuSpec, ModelSpec, ReplicaSizing], PerfModel]] = {
    "kernel": _kernel,
    "roofline": _roofline,
    "constant": _constant,
}


def build_perf_model(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    """The step-time model of one pool's replicas."""
    return PERF_MODELS[pool.perf.model](pool, gpu, model, sizing)


__all__ = ["PERF_MODELS", "BatchShape", "PerfModel", "build_perf_model"]

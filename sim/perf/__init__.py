"""Performance models: how long an engine step takes.

``build_perf_model`` turns a pool's ``perf`` block into a :class:`PerfModel` (registry ``PERF_MODELS``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import resources

import yaml

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


#: CPU scheduling overhead per step when no fitted figure exists (see :func:`step_overhead_defaults`).
DEFAULT_STEP_OVERHEAD_S = 2e-3
DEFAULT_PER_SEQUENCE_OVERHEAD_S = 10e-6


@cache
def step_overhead_defaults() -> tuple[float, float]:
    """(seconds per step, seconds per sequence per step) of vLLM's CPU-side work, as fitted end to end.

    Read from ``sim/perf/calibrations/step_overhead.yaml`` (written by the end-to-end validation, fitted on
    half of the measured H100 serving rows); the first-version round figures if that file is absent. The
    overhead is the host's, not the GPU's, so every GPU uses the same figures.
    """
    path = resources.files("sim.perf").joinpath("calibrations", "step_overhead.yaml")
    if not path.is_file():
        return DEFAULT_STEP_OVERHEAD_S, DEFAULT_PER_SEQUENCE_OVERHEAD_S
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return float(data["step_overhead_s"]), float(data["per_sequence_overhead_s"])


def _kernel(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    from sim.perf.kernel import KernelModel

    cfg = pool.perf
    assert isinstance(cfg, KernelPerf)
    ops = KernelModel.for_gpu(gpu, calibrated=cfg.calibrated, calibration_file=cfg.calibration_file)
    cal = ops.calibration
    fitted_step, fitted_per_seq = step_overhead_defaults()
    step = next(v for v in (cfg.step_overhead_s, cal.step_overhead_s, fitted_step) if v is not None)
    per_seq = next(v for v in (cfg.per_sequence_overhead_s, cal.per_sequence_overhead_s, fitted_per_seq)
                   if v is not None)
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

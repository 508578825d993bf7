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
        cfg.eager_overhead_per_layer_s,
        cfg.cudagraph_max_tokens,
    )


#: Host overheads of a step when no fitted figure exists (see :func:`step_overhead_defaults`).
DEFAULT_OVERHEADS = {"step_overhead_s": 2e-3, "per_sequence_overhead_s": 10e-6, "eager_overhead_per_layer_s": 0.0}


@cache
def step_overhead_defaults() -> dict[str, float]:
    """vLLM's host-side overheads per step, as fitted end to end, keyed as in :data:`DEFAULT_OVERHEADS`.

    Seconds per step, per sequence per step, and extra per step too large for CUDA-graph replay. Read from
    ``sim/perf/calibrations/step_overhead.yaml`` (written by the end-to-end validation, fitted on half of the
    measured H100 serving rows); the first-version round figures for any figure that file lacks. The overhead
    is the host's, not the GPU's, so every GPU uses the same figures.
    """
    out = dict(DEFAULT_OVERHEADS)
    path = resources.files("sim.perf").joinpath("calibrations", "step_overhead.yaml")
    if path.is_file():
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        out.update({k: float(data[k]) for k in DEFAULT_OVERHEADS if k in data})
    return out


def _kernel(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    from sim.perf.kernel import KernelModel

    cfg = pool.perf
    assert isinstance(cfg, KernelPerf)
    ops = KernelModel.for_gpu(gpu, calibrated=cfg.calibrated, calibration_file=cfg.calibration_file)
    cal = ops.calibration
    fitted = step_overhead_defaults()
    # Precedence: the scenario, then the calibration file, then the end-to-end fit.
    step, per_seq, eager = (
        next(v for v in (getattr(cfg, key), getattr(cal, key, None), fitted[key]) if v is not None)
        for key in DEFAULT_OVERHEADS)
    return TransformerStepModel(ops, model, pool.tensor_parallel, pool.precision, sizing.kv_dtype, step, per_seq,
                                eager, cfg.cudagraph_max_tokens)


def _constant(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    assert isinstance(pool.perf, ConstantPerf)
    return ConstantStepModel(pool.perf)


PERF_MODELS: dict[str, Callable[[PoolConfig, GpuSpec, ModelSpec, ReplicaSizing], PerfModel]] = {
    "kernel": _kernel,
    "roofline": _roofline,
    "constant": _constant,
}


class SlowedPerf:
    """Another model's step times times ``factor`` (a hypervisor's overhead on a passed-through GPU)."""

    def __init__(self, inner: PerfModel, factor: float) -> None:
        self.inner, self.factor = inner, factor

    def step_time_s(self, shape: BatchShape) -> float:
        return self.inner.step_time_s(shape) * self.factor

    def decode_step_times_s(self, n: int, kv_tokens: int, steps: int) -> list[float]:
        inner = getattr(self.inner, "decode_step_times_s", None)
        times = inner(n, kv_tokens, steps) if inner is not None else [
            self.inner.step_time_s(BatchShape((), n, kv_tokens + n * j, n)) for j in range(steps)]
        return [t * self.factor for t in times]


def build_perf_model(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    """The step-time model of one pool's replicas (with a passed-through GPU's hypervisor overhead, if any)."""
    perf = PERF_MODELS[pool.perf.model](pool, gpu, model, sizing)
    sharing = pool.sharing
    if sharing is not None and getattr(sharing, "hypervisor_overhead", 0.0):
        perf = SlowedPerf(perf, 1.0 + sharing.hypervisor_overhead)
    return perf


__all__ = ["PERF_MODELS", "BatchShape", "PerfModel", "build_perf_model"]

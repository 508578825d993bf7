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
from sim.engine.profiles import engine_profiles
from sim.engine.sizing import ReplicaSizing
from sim.perf.kernel import SAFE_LOADER
from sim.perf.roofline import RooflineOperators
from sim.perf.shape import BatchShape, PerfModel
from sim.perf.step import ConstantStepModel, TransformerStepModel


def _roofline(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    cfg = pool.perf
    assert isinstance(cfg, RooflinePerf)
    profile = engine_profiles()[pool.engine.profile]
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
        overlap_host=profile.overlap_host,
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
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
        out.update({k: float(data[k]) for k in DEFAULT_OVERHEADS if k in data})
    return out


def _kernel(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    from sim.perf.kernel import KernelModel

    cfg = pool.perf
    assert isinstance(cfg, KernelPerf)
    ops = (KernelModel.for_gpu(gpu, calibration_file=cfg.calibration_file) if cfg.calibration_file is not None
           else KernelModel.shared(gpu, cfg.calibrated))
    cal = ops.calibration
    fitted = step_overhead_defaults()
    profile = engine_profiles()[pool.engine.profile]
    # Precedence: the scenario, then the engine profile's own fit, then the calibration file, then vLLM's
    # end-to-end fit.
    step, per_seq, eager = (
        next(v for v in (getattr(cfg, key), profile.overheads.get(key), getattr(cal, key, None), fitted[key])
             if v is not None)
        for key in DEFAULT_OVERHEADS)
    scale = cfg.gpu_time_scale if cfg.gpu_time_scale is not None else profile.gpu_time_scale
    overlap = cfg.overlap_host if cfg.overlap_host is not None else profile.overlap_host
    return TransformerStepModel(ops, model, pool.tensor_parallel, pool.precision, sizing.kv_dtype, step, per_seq,
                                eager, cfg.cudagraph_max_tokens, scale, overlap, sizing.max_model_len)


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


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


class PipelinedPerf:
    """A step through ``stages`` pipeline stages, the batch split into ``microbatches`` (vLLM runs as many as there
    are stages): each micro-batch's stage time is its own step time (whole model) over ``stages``, and the
    pipeline's makespan is ``sum of the micro-batches' stage times + (stages - 1) x the longest`` (a flow shop of
    identical stages; for equal micro-batches the textbook ``(m + p - 1) x t``, bubble ``(p - 1) / (m + p - 1)``),
    plus the activations' hops between stages. Host overheads are counted per micro-batch (an upper bound)."""

    def __init__(self, inner: PerfModel, stages: int, microbatches: int, hop_s_per_token: float) -> None:
        self.inner, self.stages, self.microbatches, self.hop_s_per_token = inner, stages, microbatches, hop_s_per_token

    def microbatch_shapes(self, shape: BatchShape) -> list[BatchShape]:
        """The batch split into near-equal micro-batches (decodes and their KV evenly, prefill chunks in turn)."""
        m = self.microbatches
        decodes = _split(shape.n_decodes, m)
        chunks = [shape.prefill_chunks[i::m] for i in range(m)]
        kv = [shape.decode_kv_tokens * d // shape.n_decodes if shape.n_decodes else 0 for d in decodes]
        kv[0] += shape.decode_kv_tokens - sum(kv)
        sampled = _split(shape.n_sampled, m)
        out = [BatchShape(c, d, k, s) for c, d, k, s in zip(chunks, decodes, kv, sampled, strict=True)]
        return [b for b in out if b.prefill_chunks or b.n_decodes] or [shape]

    def step_time_s(self, shape: BatchShape) -> float:
        p = self.stages
        stage = [self.inner.step_time_s(b) / p for b in self.microbatch_shapes(shape)]
        tokens = sum(n for _, n in shape.prefill_chunks) + shape.n_decodes
        hops = (p - 1) * self.hop_s_per_token * tokens / max(1, len(stage))
        return sum(stage) + (p - 1) * max(stage) + hops

    def decode_step_times_s(self, n: int, kv_tokens: int, steps: int) -> list[float]:
        return [self.step_time_s(BatchShape((), n, kv_tokens + n * j, n)) for j in range(steps)]


def build_perf_model(pool: PoolConfig, gpu: GpuSpec, model: ModelSpec, sizing: ReplicaSizing) -> PerfModel:
    """The step-time model of one pool's replicas (pipelined over ``pipeline_parallel`` stages, with a passed-through
    GPU's hypervisor overhead, if any)."""
    perf = PERF_MODELS[pool.perf.model](pool, gpu, model, sizing)
    if pool.pipeline_parallel > 1:
        # A hop carries each token's hidden state (16-bit) over the interconnect between the stages' GPUs.
        hop = model.hidden_size * 2 / (gpu.interconnect_gb_s * 1e9)
        perf = PipelinedPerf(perf, pool.pipeline_parallel, pool.pipeline_parallel, hop)
    sharing = pool.sharing
    if sharing is not None and getattr(sharing, "hypervisor_overhead", 0.0):
        perf = SlowedPerf(perf, 1.0 + sharing.hypervisor_overhead)
    return perf


__all__ = ["PERF_MODELS", "BatchShape", "PerfModel", "build_perf_model"]

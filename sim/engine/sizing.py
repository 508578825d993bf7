"""Memory sizing of one replica: weights, activation reserve and the paged KV cache, as vLLM does it.

vLLM gives the engine ``gpu_memory_utilization`` x device memory. From that budget it subtracts the weights
(per GPU, split by tensor parallelism) and the peak activation memory measured in a profiling run; what remains
is cut into KV-cache blocks of ``block_size`` tokens. We estimate the profiling peak instead of measuring it
(see :func:`activation_reserve_bytes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.catalog import GpuSpec, ModelSpec
from sim.config import PoolConfig

GIB = 2**30

#: Bytes per weight. int4 is weight-only (W4A16) with one fp16 scale per group of 128 weights.
WEIGHT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5 + 2 / 128}
#: The tensor-core dtype the GEMMs run in. fp8 and int8 are W8A8; int4 dequantises to bf16.
COMPUTE_DTYPE = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "int8": "int8", "int4": "bf16"}
KV_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1}
#: CUDA context, cuBLAS workspaces, NCCL buffers and CUDA graphs: memory outside PyTorch's allocator.
NON_TORCH_BYTES = 1.0 * GIB


class SizingError(ValueError):
    """A deployment that cannot run; ``field`` is the pool field to change."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ReplicaSizing:
    """Memory plan of one replica (per-GPU figures; a replica has ``tensor_parallel`` GPUs)."""

    weight_bytes_per_gpu: float
    activation_bytes_per_gpu: float
    kv_bytes_per_token_per_gpu: float
    kv_blocks: int
    block_size: int
    max_model_len: int
    compute_dtype: str
    kv_dtype: str
    max_num_batched_tokens: int = 8192  # the step's token budget (resolved: see token_budget)

    @property
    def kv_tokens(self) -> int:
        return self.kv_blocks * self.block_size


def compute_dtype(gpu: GpuSpec, precision: str) -> str:
    """The tensor-core dtype the GEMMs of ``precision`` weights run in on ``gpu``: fp8/int8 (W8A8) where the GPU
    has those tensor cores, else bf16 (weight-only, as vLLM runs fp8 checkpoints on an A100 with Marlin)."""
    compute = COMPUTE_DTYPE[precision]
    return compute if gpu.has_tensor_cores(compute) else "bf16"


def weight_bytes(model: ModelSpec, precision: str) -> float:
    """Whole-model weight bytes. Embeddings and the LM head stay in 16 bits, as quantised checkpoints keep them."""
    embed_params = model.vocab_size * model.hidden_size * (1 if model.tie_word_embeddings else 2)
    return (model.n_params - embed_params) * WEIGHT_BYTES[precision] + embed_params * 2.0


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str) -> float:
    """Bytes of one token's KV cache over the whole model (every layer's keys and values, each KV head once)."""
    return 2 * model.n_layers * model.n_kv_heads * model.head_dim * KV_BYTES[kv_dtype]


def kv_heads_per_gpu(model: ModelSpec, tensor_parallel: int) -> int:
    """KV heads each GPU holds: split by TP, replicated when TP exceeds the KV-head count."""
    return max(1, math.ceil(model.n_kv_heads / tensor_parallel))


def token_budget(pool: PoolConfig, max_model_len: int) -> int:
    """The engine's tokens per step: ``max_num_batched_tokens``, or where that is null, vLLM V0's whole-prompt rule
    ``max(max_model_len, 2048)``."""
    budget = pool.engine.max_num_batched_tokens
    return max(max_model_len, 2048) if budget is None else budget


def activation_reserve_bytes(model: ModelSpec, pool: PoolConfig, max_model_len: int | None = None) -> float:
    """Estimated peak activation memory per GPU of vLLM's profiling run.

    A forward pass of ``max_num_batched_tokens`` tokens holds the residual stream and its normalised copy, the
    QKV output and the gated-MLP intermediate (16-bit), plus fp32 logits for up to ``max_num_seqs`` sampled
    rows, plus :data:`NON_TORCH_BYTES`.
    """
    eng, tp = pool.engine, pool.tensor_parallel
    tokens = token_budget(pool, max_model_len or eng.max_model_len or model.max_context_tokens)
    qkv = (model.n_heads + 2 * model.n_kv_heads) * model.head_dim / tp
    per_token = 2 * model.hidden_size + qkv + 2 * model.intermediate_size / tp
    logits = min(eng.max_num_seqs, tokens) * model.vocab_size / tp * 4
    return tokens * per_token * 2 + logits + NON_TORCH_BYTES


def size_replica(gpu: GpuSpec, model: ModelSpec, pool: PoolConfig) -> ReplicaSizing:
    """Plan one replica's memory; raise :class:`SizingError` for a deployment that cannot run."""
    eng, tp, pp = pool.engine, pool.tensor_parallel, pool.pipeline_parallel
    if model.n_heads % tp:
        raise SizingError("tensor_parallel",
                          f"{tp} does not divide the {model.n_heads} attention heads of {model.name}")
    if model.n_layers % pp:
        raise SizingError("pipeline_parallel",
                          f"{pp} does not divide the {model.n_layers} layers of {model.name}")
    compute = compute_dtype(gpu, pool.precision)
    kv_dtype = "bf16" if pool.kv_cache_dtype == "auto" else pool.kv_cache_dtype
    if kv_dtype == "fp8" and gpu.sm_version < 80:
        raise SizingError("kv_cache_dtype", f"fp8 KV cache needs compute capability 8.0+; {gpu.name} has "
                          f"{gpu.sm_version / 10:.1f}; allowed here: auto, bf16, fp16")

    budget = gpu.memory_bytes * eng.gpu_memory_utilization
    weights = weight_bytes(model, pool.precision) / (tp * pp)  # each stage holds its layers' share
    if weights >= budget:
        raise SizingError(
            "model",
            f"{model.name} in {pool.precision} needs {weights / GIB:.1f} GiB of weights per GPU at "
            f"tensor_parallel={tp}, "
            f"more than {gpu.name}'s {gpu.memory_gib:g} GiB x gpu_memory_utilization {eng.gpu_memory_utilization:g} "
            f"= {budget / GIB:.1f} GiB; use a larger GPU, more tensor parallelism or a lower precision",
        )
    activation = eng.activation_reserve_gib * GIB if eng.activation_reserve_gib is not None else (
        activation_reserve_bytes(model, pool, eng.max_model_len or model.max_context_tokens)
    )
    kv_per_token = 2 * (model.n_layers // pp) * kv_heads_per_gpu(model, tp) * model.head_dim * KV_BYTES[kv_dtype]
    kv_budget = budget - weights - activation
    kv_blocks = int(kv_budget // (kv_per_token * eng.block_size)) if kv_budget > 0 else 0
    if eng.num_gpu_blocks_override is not None:
        kv_blocks = eng.num_gpu_blocks_override
    max_model_len = eng.max_model_len or model.max_context_tokens
    if max_model_len > model.max_context_tokens:
        raise SizingError(
            "engine.max_model_len",
            f"{max_model_len} exceeds {model.name}'s context length {model.max_context_tokens}",
        )
    kv_tokens = kv_blocks * eng.block_size
    if kv_tokens < max_model_len:
        raise SizingError(
            "engine.num_gpu_blocks_override" if eng.num_gpu_blocks_override else "engine.max_model_len",
            f"the KV cache of {model.name} on {tp} x {gpu.name} holds {kv_tokens} tokens "
            f"({max(kv_budget, 0) / GIB:.2f} GiB per GPU left after {weights / GIB:.1f} GiB weights and "
            f"{activation / GIB:.1f} GiB activations), fewer than max_model_len {max_model_len}; "
            + (f"set engine.max_model_len <= {kv_tokens}, or use more memory" if kv_tokens > 0 else
               "nothing is left for it: use more memory (more GPUs, a bigger profile, a smaller model or "
               "precision) or a smaller engine.activation_reserve_gib"),
        )
    budget_tokens = token_budget(pool, max_model_len)
    if not eng.enable_chunked_prefill and budget_tokens < max_model_len:
        raise SizingError(
            "engine.max_num_batched_tokens",
            f"{budget_tokens} is below max_model_len {max_model_len}; without chunked prefill a whole prompt must "
            "fit in one step: set engine.max_model_len <= the budget, raise the budget, or enable_chunked_prefill",
        )
    return ReplicaSizing(
        weight_bytes_per_gpu=weights,
        activation_bytes_per_gpu=activation,
        kv_bytes_per_token_per_gpu=kv_per_token,
        kv_blocks=kv_blocks,
        block_size=eng.block_size,
        max_model_len=max_model_len,
        compute_dtype=compute,
        kv_dtype=kv_dtype,
        max_num_batched_tokens=budget_tokens,
    )

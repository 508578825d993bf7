"""Iteration time of a batch: the sum over layers of operator times, plus CPU overhead per step.

One transformer layer of a batch of ``T`` tokens runs: QKV projection, attention (prefill chunks and decodes),
output projection, gated MLP (gate+up, down), RMS norms and activation, and with tensor parallelism ``tp``
two all-reduces of the ``T x hidden`` activations. The LM head runs once per step over the sampled rows.
Tensor parallelism splits heads and the MLP intermediate size across GPUs (KV heads are replicated when
``tp`` exceeds their count).
"""

from __future__ import annotations

from typing import Protocol

from sim.catalog import ModelSpec
from sim.config import ConstantPerf
from sim.engine.sizing import kv_heads_per_gpu
from sim.perf.shape import BatchShape

ACT_BYTES = 2


class OperatorModel(Protocol):
    """Operator times in seconds (see :class:`sim.perf.roofline.RooflineOperators`)."""

    def gemm_s(self, m: int, n: int, k: int, dtype: str = "bf16") -> float: ...
    def attention_prefill_s(self, batch_size: int, seq_len: int, n_heads: int, n_kv_heads: int, head_dim: int,
                            dtype: str = "bf16", kv_dtype: str = "bf16", cached_len: int = 0) -> float: ...
    def attention_decode_s(self, batch_size: int, kv_len: float, n_heads: int, n_kv_heads: int, head_dim: int,
                           kv_dtype: str = "bf16") -> float: ...
    def allreduce_s(self, n_bytes: float, n_gpus: int) -> float: ...
    def elementwise_s(self, n_bytes: float) -> float: ...


class TransformerStepModel:
    """Prices a :class:`BatchShape` for one model on one replica of ``tensor_parallel`` GPUs."""

    def __init__(
        self,
        ops: OperatorModel,
        model: ModelSpec,
        tensor_parallel: int,
        precision: str,
        kv_dtype: str,
        step_overhead_s: float,
        per_sequence_overhead_s: float,
    ) -> None:
        self.ops = ops
        self.model = model
        self.tp = tensor_parallel
        self.precision = "bf16" if precision == "fp16" else precision
        self.kv_dtype = kv_dtype
        self.step_overhead_s = step_overhead_s
        self.per_sequence_overhead_s = per_sequence_overhead_s
        m, tp = model, tensor_parallel
        self._heads = m.n_heads // tp
        self._kv_heads = kv_heads_per_gpu(m, tp)
        self._qkv_n = (self._heads + 2 * self._kv_heads) * m.head_dim
        self._o_k = self._heads * m.head_dim
        self._inter = m.intermediate_size // tp
        self._dense: dict[int, float] = {}
        self._head: dict[int, float] = {}

    def dense_layer_s(self, tokens: int) -> float:
        """Time of the token-count-dependent part of one layer: GEMMs, norms/activation and all-reduces.

        Memoised per token count: batch sizes repeat across steps, so this is mostly a dictionary hit.
        """
        t = self._dense.get(tokens)
        if t is None:
            m, ops, p = self.model, self.ops, self.precision
            h = m.hidden_size
            t = ops.gemm_s(tokens, self._qkv_n, h, p)
            t += ops.gemm_s(tokens, h, self._o_k, p)
            t += ops.gemm_s(tokens, 2 * self._inter, h, p)
            t += ops.gemm_s(tokens, h, self._inter, p)
            # Two RMS norms and residual adds over hidden, SiLU-and-mul over the intermediate (read 2, write 1).
            t += ops.elementwise_s(tokens * (4 * h + 3 * self._inter) * ACT_BYTES)
            t += 2 * ops.allreduce_s(tokens * h * ACT_BYTES, self.tp)
            self._dense[tokens] = t
        return t

    def layer_s(self, shape: BatchShape) -> float:
        """Time of one transformer layer for ``shape`` (all GPUs of the replica run in lockstep)."""
        ops, d = self.ops, self.model.head_dim
        t = self.dense_layer_s(shape.num_tokens)
        for cached, chunk in shape.prefill_chunks:
            t += ops.attention_prefill_s(1, chunk, self._heads, self._kv_heads, d, self.precision, self.kv_dtype,
                                         cached)
        if shape.n_decodes:
            mean_kv = shape.decode_kv_tokens / shape.n_decodes
            t += ops.attention_decode_s(shape.n_decodes, mean_kv, self._heads, self._kv_heads, d, self.kv_dtype)
        return t

    def step_time_s(self, shape: BatchShape) -> float:
        if shape.num_tokens == 0:
            return self.step_overhead_s
        m = self.model
        t = m.n_layers * self.layer_s(shape)
        head = self._head.get(shape.n_sampled)
        if head is None:
            head = self._head[shape.n_sampled] = self.ops.gemm_s(shape.n_sampled, m.vocab_size // self.tp,
                                                                 m.hidden_size, "bf16")
        return t + head + self.step_overhead_s + self.per_sequence_overhead_s * shape.num_seqs


class ConstantStepModel:
    """Test double: ``step_s + per_token_s x tokens``, whatever the model or GPU."""

    def __init__(self, cfg: ConstantPerf) -> None:
        self.step_s = cfg.step_s
        self.per_token_s = cfg.per_token_s

    def step_time_s(self, shape: BatchShape) -> float:
        return self.step_s + self.per_token_s * shape.num_tokens

"""Iteration time of a batch: the sum over layers of operator times, plus CPU overhead per step.

One transformer layer of a batch of ``T`` tokens runs: QKV projection, attention (prefill chunks and decodes),
output projection, gated MLP (gate+up, down), RMS norms and activation, and with tensor parallelism ``tp``
two all-reduces of the ``T x hidden`` activations. The LM head runs once per step over the sampled rows.
Tensor parallelism splits heads and the MLP intermediate size across GPUs (KV heads are replicated when
``tp`` exceeds their count).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from sim import libm
from sim.catalog import ModelSpec
from sim.config import ConstantPerf
from sim.engine.sizing import kv_heads_per_gpu
from sim.perf.shape import BatchShape

ACT_BYTES = 2
#: Decode attention is tabulated per batch size over log2(mean KV length) at this many points per octave, up to
#: ``2**DECODE_TABLE_OCTAVES`` tokens or an octave past the replica's longest sequence, and interpolated linearly
#: (see :meth:`TransformerStepModel.decode_attention_s`).
DECODE_TABLE_PER_OCTAVE = 64
DECODE_TABLE_OCTAVES = 22
#: Decode tables are built for this many consecutive batch sizes at a time (:meth:`TransformerStepModel.decode_table`).
DECODE_TABLE_BLOCK = 32


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
    """Prices a :class:`BatchShape` for one model on one replica of ``tensor_parallel`` GPUs.

    Host overhead per step: ``step_overhead_s + per_sequence_overhead_s x sequences``, plus
    ``eager_overhead_per_layer_s x layers`` when the step has more than ``cudagraph_max_tokens`` tokens (vLLM's
    ``max_cudagraph_capture_size``, 512 by default: larger steps launch every layer's kernels from Python
    instead of replaying a captured graph).
    """

    def __init__(
        self,
        ops: OperatorModel,
        model: ModelSpec,
        tensor_parallel: int,
        precision: str,
        kv_dtype: str,
        step_overhead_s: float,
        per_sequence_overhead_s: float,
        eager_overhead_per_layer_s: float = 0.0,
        cudagraph_max_tokens: int = 512,
        gpu_time_scale: float = 1.0,
        overlap_host: bool = False,
        max_kv_tokens: int | None = None,
    ) -> None:
        self.ops = ops
        self.model = model
        self.tp = tensor_parallel
        self.precision = "bf16" if precision == "fp16" else precision
        self.kv_dtype = kv_dtype
        self.step_overhead_s = step_overhead_s
        self.per_sequence_overhead_s = per_sequence_overhead_s
        self.eager_overhead_per_layer_s = eager_overhead_per_layer_s
        self._eager_s = eager_overhead_per_layer_s * model.n_layers
        self.cudagraph_max_tokens = cudagraph_max_tokens
        # An engine profile's efficiency set: GPU time x gpu_time_scale, and host time hidden behind the GPU's
        # (overlap_host: the step takes the longer of the two); the plain sum when neither is set.
        self.gpu_time_scale = gpu_time_scale
        self.overlap_host = overlap_host
        self._plain = gpu_time_scale == 1.0 and not overlap_host
        # Decode tables reach past the longest KV a sequence can hold (a batch's mean never exceeds it).
        self._octaves = DECODE_TABLE_OCTAVES if max_kv_tokens is None else min(
            DECODE_TABLE_OCTAVES, math.ceil(math.log2(max(max_kv_tokens, 2))) + 1)
        m, tp = model, tensor_parallel
        self._heads = m.n_heads // tp
        self._kv_heads = kv_heads_per_gpu(m, tp)
        self._qkv_n = (self._heads + 2 * self._kv_heads) * m.head_dim
        self._o_k = self._heads * m.head_dim
        self._inter = m.intermediate_size // tp
        self._dense: dict[int, float] = {}
        self._head: dict[int, float] = {}
        # Rows are a pure function of the operator model and these: shared with other runs where it keeps them.
        shared = getattr(ops, "decode_rows", None)
        self._decode_rows: dict[int, np.ndarray | None] = {} if shared is None else shared(
            (self._heads, self._kv_heads, m.head_dim, kv_dtype, self._octaves))
        self._decode_tables: dict[int, tuple[list[float], np.ndarray] | None] = {}

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

    def kernel_spec(self) -> tuple | None:
        """What the compiled engine core needs to price the dense layers, LM head and prefill attention itself
        (sim/engine/_core.c), with the same arithmetic: for the calibrated kernel model; None for other operator
        models (the core then calls :meth:`dense_layer_s`, :meth:`head_s` and :meth:`prefill_attention_s`)."""
        from sim.perf.kernel import ELEMENTWISE_FLOOR_S, ELEMENTWISE_MEMORY_EFFICIENCY, KernelModel

        ops = self.ops
        if type(ops) is not KernelModel:
            return None
        m, p, h = self.model, self.precision, self.model.hidden_size
        gemms = (ops.gemm_spec(self._qkv_n, h, p), ops.gemm_spec(h, self._o_k, p), ops.gemm_spec(2 * self._inter, h, p),
                 ops.gemm_spec(h, self._inter, p), ops.gemm_spec(m.vocab_size // self.tp, h, "bf16"))
        consts = (float(h), float(self._inter), float(ACT_BYTES), ELEMENTWISE_MEMORY_EFFICIENCY, ELEMENTWISE_FLOOR_S,
                  gemms[0][9])
        return (gemms, consts, ops.allreduce_spec(self.tp),
                ops.prefill_spec(self._heads, self._kv_heads, m.head_dim, self.kv_dtype))

    def layer_s(self, shape: BatchShape) -> float:
        """Time of one transformer layer for ``shape`` (all GPUs of the replica run in lockstep)."""
        t = self.dense_layer_s(shape.num_tokens)
        for cached, chunk in shape.prefill_chunks:
            t += self.prefill_attention_s(cached, chunk)
        if shape.n_decodes:
            t += self.decode_attention_s(shape.n_decodes, shape.decode_kv_tokens / shape.n_decodes)
        return t

    def prefill_attention_s(self, cached: int, chunk: int) -> float:
        """Attention of one prefill chunk of ``chunk`` tokens over ``cached`` tokens already in its KV cache, per
        layer."""
        return self.ops.attention_prefill_s(1, chunk, self._heads, self._kv_heads, self.model.head_dim,
                                            self.precision, self.kv_dtype, cached)

    def head_s(self, n_sampled: int) -> float:
        """The LM head over the ``n_sampled`` rows that produce a token (once per step; memoised)."""
        head = self._head.get(n_sampled)
        if head is None:
            m = self.model
            head = self._head[n_sampled] = self.ops.gemm_s(n_sampled, m.vocab_size // self.tp, m.hidden_size, "bf16")
        return head

    def decode_attention_exact_s(self, n: int, mean_kv: float) -> float:
        """Decode attention from the operator model itself (outside the table's range), per layer."""
        return self.ops.attention_decode_s(n, mean_kv, self._heads, self._kv_heads, self.model.head_dim,
                                           self.kv_dtype)

    def decode_table(self, n: int) -> np.ndarray | None:
        """The decode-attention table of a batch of ``n`` (see :meth:`decode_attention_s`), or None when the
        operator model cannot evaluate it vectorised (then every call is exact)."""
        row = self._decode_rows.get(n, False)
        if row is False:
            tables = getattr(self.ops, "attention_decode_tables_s", None)
            if tables is None:
                self._decode_rows[n] = None
                return None
            # The whole aligned block of batch sizes around n at once (a row does not depend on the others).
            low = (n - 1) // DECODE_TABLE_BLOCK * DECODE_TABLE_BLOCK + 1
            sizes = list(range(low, low + DECODE_TABLE_BLOCK))
            grid = libm.exp2(np.arange(self._octaves * DECODE_TABLE_PER_OCTAVE + 1) / DECODE_TABLE_PER_OCTAVE)
            values = tables(sizes, grid, self._heads, self._kv_heads, self.model.head_dim, self.kv_dtype)
            values.flags.writeable = False  # rows may be shared with later runs
            for size, r in zip(sizes, values, strict=True):
                self._decode_rows.setdefault(size, r)
            row = self._decode_rows[n]
        return row

    def _decode_table(self, n: int) -> tuple[list[float], np.ndarray] | None:
        """Decode attention times of a batch of ``n`` at mean KV lengths ``2**(i / DECODE_TABLE_PER_OCTAVE)``,
        as a list (scalar lookups) and an array (vectorised ones), or None (see :meth:`decode_table`)."""
        table = self._decode_tables.get(n, False)
        if table is False:
            row = self.decode_table(n)
            table = self._decode_tables[n] = None if row is None else (row.tolist(), row)
        return table

    def decode_attention_s(self, n: int, mean_kv: float) -> float:
        """Decode attention of ``n`` sequences attending to ``mean_kv`` tokens on average, per layer.

        Where the operator model is vectorised (the calibrated kernel model), read from a per-batch-size table
        over log2(KV length), 64 points per octave, interpolated linearly: within 0.1% of the operator model
        (tests/test_perf.py), and what lets a run of decode steps be priced in a few array operations. Both
        stepping modes read the same table, so they agree exactly.
        """
        tables = self._decode_table(n)
        table = tables[0] if tables is not None else ()
        x = math.log2(mean_kv) * DECODE_TABLE_PER_OCTAVE if tables is not None else -1.0
        if x < 0 or x >= len(table) - 1:
            return self.decode_attention_exact_s(n, mean_kv)
        i = int(x)
        lo = table[i]
        return lo + (table[i + 1] - lo) * (x - i)

    def decode_step_times_s(self, n: int, kv_tokens: int, steps: int) -> list[float]:
        """Times of ``steps`` whole-batch decode steps of ``n`` sequences, the first attending to ``kv_tokens``
        KV tokens in all, each later one to ``n`` more: :meth:`step_time_s` of those shapes, with the decode
        attention read from its table in a few array operations (equal up to rounding)."""
        table = self._decode_table(n) if n else None
        last_kv = (kv_tokens + n * (steps - 1)) / n if n else 0.0
        if table is None or kv_tokens < n or last_kv >= 2.0 ** self._octaves:
            return [self.step_time_s(BatchShape((), n, kv_tokens + n * j, n)) for j in range(steps)]
        m = self.model
        head = self.head_s(n)
        eager = self._eager_s if n > self.cudagraph_max_tokens else 0.0
        if not self._plain:
            host = self.step_overhead_s + self.per_sequence_overhead_s * n + eager
            gpu = self._gpu_decode_s(table, n, kv_tokens, steps, head)
            if self.overlap_host:
                return [max(g * self.gpu_time_scale, host) for g in gpu]
            return [g * self.gpu_time_scale + host for g in gpu]
        fixed = head + self.step_overhead_s + self.per_sequence_overhead_s * n
        dense = self.dense_layer_s(n)
        if steps <= 16:  # short runs: a Python loop beats the fixed cost of array operations
            values, out = table[0], []
            for j in range(steps):
                x = math.log2((kv_tokens + n * j) / n) * DECODE_TABLE_PER_OCTAVE
                i = int(x)
                lo = values[i]
                t = m.n_layers * (dense + (lo + (values[i + 1] - lo) * (x - i))) + fixed
                out.append(t + eager if eager else t)
            return out
        x = libm.log2((kv_tokens + n * np.arange(steps)) / n) * DECODE_TABLE_PER_OCTAVE
        i = x.astype(np.int64)
        values = table[1]
        lo = values[i]
        t = m.n_layers * (dense + (lo + (values[i + 1] - lo) * (x - i))) + fixed
        return (t + eager if eager else t).tolist()

    def _gpu_decode_s(self, table, n: int, kv_tokens: int, steps: int, head: float) -> list[float]:
        """GPU time alone of the whole-batch decode steps of :meth:`decode_step_times_s` (its table path)."""
        m = self.model
        x = libm.log2((kv_tokens + n * np.arange(steps)) / n) * DECODE_TABLE_PER_OCTAVE
        i = x.astype(np.int64)
        lo = table[1][i]
        return (m.n_layers * (self.dense_layer_s(n) + (lo + (table[1][i + 1] - lo) * (x - i))) + head).tolist()

    def step_time_s(self, shape: BatchShape) -> float:
        if shape.num_tokens == 0:
            return self.step_overhead_s
        m = self.model
        t = m.n_layers * self.layer_s(shape)
        head = self.head_s(shape.n_sampled)
        if not self._plain:
            host = self.step_overhead_s + self.per_sequence_overhead_s * shape.num_seqs
            if shape.num_tokens > self.cudagraph_max_tokens:
                host += self._eager_s
            gpu = (t + head) * self.gpu_time_scale
            return max(gpu, host) if self.overlap_host else gpu + host
        t += head + self.step_overhead_s + self.per_sequence_overhead_s * shape.num_seqs
        if shape.num_tokens > self.cudagraph_max_tokens:
            # vLLM replays captured CUDA graphs only up to its largest capture size; a bigger step launches
            # its kernels from Python, which costs host time the graph replay does not.
            t += self._eager_s
        return t


class ConstantStepModel:
    """Test double: ``step_s + per_token_s x tokens``, whatever the model or GPU."""

    def __init__(self, cfg: ConstantPerf) -> None:
        self.step_s = cfg.step_s
        self.per_token_s = cfg.per_token_s

    def step_time_s(self, shape: BatchShape) -> float:
        return self.step_s + self.per_token_s * shape.num_tokens

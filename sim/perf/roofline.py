"""First-version operator model: roofline (max of compute and memory time) x flat efficiency factors.

Each operator's time is ``max(FLOPs / (peak x compute efficiency), bytes / (bandwidth x memory efficiency))``
plus a fixed kernel floor. The operator API is the one the calibrated kernel model (issue #3) implements,
so the step model and engine do not change when calibrated curves replace these flat factors.
"""

from __future__ import annotations

from sim.catalog import GpuSpec
from sim.config import RooflinePerf
from sim.engine.sizing import COMPUTE_DTYPE, KV_BYTES, WEIGHT_BYTES, compute_dtype

ACT_BYTES = 2  # activations are 16-bit


class RooflineOperators:
    """Operator times in seconds for one GPU, from its spec sheet and flat efficiencies."""

    def __init__(self, gpu: GpuSpec, cfg: RooflinePerf) -> None:
        self.gpu = gpu
        self.cfg = cfg
        self._bw = gpu.memory_bandwidth_gb_s * 1e9 * cfg.memory_efficiency
        self._peak = {
            dtype: gpu.tensor_flops(compute_dtype(gpu, dtype)) * cfg.gemm_compute_efficiency for dtype in COMPUTE_DTYPE
        }
        self._attn_peak = gpu.tensor_flops("bf16") * cfg.attention_compute_efficiency

    def gemm_s(self, m: int, n: int, k: int, dtype: str = "bf16") -> float:
        """``y[m, n] = x[m, k] W^T`` with weights in ``dtype`` (bf16, fp16, fp8, int8, int4)."""
        if m <= 0:
            return 0.0
        flops = 2.0 * m * n * k
        moved = n * k * WEIGHT_BYTES[dtype] + (m * k + m * n) * ACT_BYTES
        return max(flops / self._peak[dtype], moved / self._bw) + self.cfg.kernel_floor_s

    def attention_prefill_s(
        self,
        batch_size: int,
        seq_len: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: str = "bf16",
        kv_dtype: str = "bf16",
        cached_len: int = 0,
    ) -> float:
        """Causal attention of ``seq_len`` new tokens over ``cached_len`` cached ones plus themselves."""
        if batch_size <= 0 or seq_len <= 0:
            return 0.0
        pairs = seq_len * cached_len + seq_len * (seq_len + 1) / 2
        flops = 4.0 * batch_size * n_heads * head_dim * pairs
        kv = (cached_len + seq_len) * 2 * n_kv_heads * head_dim * KV_BYTES[kv_dtype]
        moved = batch_size * (kv + 2 * seq_len * n_heads * head_dim * ACT_BYTES)
        return max(flops / self._attn_peak, moved / self._bw) + self.cfg.kernel_floor_s

    def attention_decode_s(
        self, batch_size: int, kv_len: float, n_heads: int, n_kv_heads: int, head_dim: int, kv_dtype: str = "bf16"
    ) -> float:
        """One new token per sequence attending to ``kv_len`` cached tokens (the batch mean)."""
        if batch_size <= 0:
            return 0.0
        flops = 4.0 * batch_size * kv_len * n_heads * head_dim
        kv_read = kv_len * 2 * n_kv_heads * head_dim * KV_BYTES[kv_dtype]
        moved = batch_size * (kv_read + 2 * n_heads * head_dim * ACT_BYTES)
        return max(flops / self._attn_peak, moved / self._bw) + self.cfg.kernel_floor_s

    def allreduce_s(self, n_bytes: float, n_gpus: int) -> float:
        """Ring all-reduce: each GPU sends and receives ``2 (n-1)/n`` of the buffer over its link."""
        if n_gpus <= 1 or n_bytes <= 0:
            return 0.0
        link = self.gpu.interconnect_gb_s * 1e9 * self.cfg.allreduce_efficiency
        return 2 * (n_gpus - 1) / n_gpus * n_bytes / link + self.cfg.allreduce_latency_s

    def elementwise_s(self, n_bytes: float) -> float:
        """A memory-bound kernel moving ``n_bytes`` (norms, activations, residual adds)."""
        return n_bytes / self._bw + self.cfg.kernel_floor_s if n_bytes > 0 else 0.0

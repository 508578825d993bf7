"""The calibrated kernel model: per-operator roofline x fitted efficiency curves, plus a fixed floor.

Each operator's time is ``max(SOL, (floor + softmax_p(FLOPs / (peak x eff_c), bytes / (bandwidth x eff_m)))
x exp(correction))`` where SOL is the spec-sheet bound ``max(FLOPs / peak, bytes / bandwidth)`` (so nothing
is ever faster than the data sheet allows), ``softmax_p`` is the p-norm that rounds the roofline's knee, and
``correction`` is a smooth function of the operator's size in log space (see :mod:`sim.perf.curves`), fitted
on measured data. A GPU without measurements borrows the efficiencies and corrections of the nearest measured
GPU (:func:`sim.perf.transfer.transfer_source`) and uses its own spec sheet for the peaks.

Time is monotone in the work by construction: GEMM time takes a running maximum over the ``m`` knots (the
fitted log-time is convex between knots, so that is enough), and the attention and all-reduce corrections
may not fall faster than their work grows (:func:`sim.perf.curves.bound_growth`).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from sim import libm
from sim.catalog import GpuSpec, load_catalog
from sim.engine.sizing import KV_BYTES, WEIGHT_BYTES, compute_dtype
from sim.errors import CatalogError
from sim.perf.curves import LogGrid, Slice2

ACT_BYTES = 2
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: 10x faster to parse
HEADER = ("# fleetsim kernel-model calibration (written by `fleetsim calibrate`; see sim/perf/kernel.py).\n"
          "# Fitted on NVIDIA AIConfigurator measurements where `source` says so: Apache-2.0,\n"
          "# Copyright (c) 2026 NVIDIA CORPORATION & AFFILIATES. Only fitted parameters are stored here.\n")
#: Element-wise kernels (norms, activations) are not in the measured tables: AIC's analytic rule.
ELEMENTWISE_MEMORY_EFFICIENCY = 0.8
ELEMENTWISE_FLOOR_S = 3e-6


@dataclass(frozen=True)
class GemmCurve:
    """Efficiency of ``y[m, n] = x[m, k] W^T`` for one weight dtype."""

    compute_efficiency: float
    memory_efficiency: float
    softness: float
    floor_s: float
    correction: LogGrid  # over (log2 m, log2 n, log2 k)


@dataclass(frozen=True)
class AttentionCurve:
    """Efficiency of an attention kernel: ``floor + work / (peak x efficiency) x exp(correction(log2 size))``.

    ``time = (floor + work / (peak x efficiency)) x exp(correction)``. Prefill: work is FLOPs against the bf16
    tensor peak; the correction is over log2 of (batch, heads per KV head, KV heads, length, head_dim).
    Decode: work is bytes read against memory bandwidth; the correction is over log2 of (batch, KV heads,
    KV length, head_dim).
    """

    efficiency: float
    floor_s: float
    correction: LogGrid


@dataclass(frozen=True)
class AllReduceCurve:
    """All-reduce over ``n`` GPUs: ``latency + bus bytes / (link x efficiency) x exp(correction(log2 bytes))``."""

    latency_s: float
    efficiency: float
    correction: LogGrid


@dataclass(frozen=True)
class Calibration:
    """Fitted parameters of one GPU (what ``fleetsim calibrate`` writes and the package ships)."""

    gpu: str
    source: str
    gemm: dict[str, GemmCurve]
    attention_prefill: dict[str, AttentionCurve]
    attention_decode: dict[str, AttentionCurve]
    allreduce: dict[int, AllReduceCurve]
    notes: tuple[str, ...] = ()
    step_overhead_s: float | None = None
    per_sequence_overhead_s: float | None = None
    fit_report: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        def curve(c):
            out = {k: (v.to_dict(digits=3) if isinstance(v, LogGrid) else float(v)) for k, v in c.__dict__.items()}
            return out

        return {
            "gpu": self.gpu,
            "source": self.source,
            "notes": list(self.notes),
            "step_overhead_s": self.step_overhead_s,
            "per_sequence_overhead_s": self.per_sequence_overhead_s,
            "gemm": {k: curve(v) for k, v in self.gemm.items()},
            "attention_prefill": {k: curve(v) for k, v in self.attention_prefill.items()},
            "attention_decode": {k: curve(v) for k, v in self.attention_decode.items()},
            "allreduce": {int(k): curve(v) for k, v in self.allreduce.items()},
            "fit_report": self.fit_report,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        def build(kind, body):
            body = dict(body)
            body["correction"] = LogGrid.from_dict(body["correction"])
            return kind(**body)

        return cls(
            gpu=data["gpu"],
            source=data.get("source", ""),
            notes=tuple(data.get("notes", ())),
            step_overhead_s=data.get("step_overhead_s"),
            per_sequence_overhead_s=data.get("per_sequence_overhead_s"),
            gemm={k: build(GemmCurve, v) for k, v in data["gemm"].items()},
            attention_prefill={k: build(AttentionCurve, v) for k, v in data["attention_prefill"].items()},
            attention_decode={k: build(AttentionCurve, v) for k, v in data["attention_decode"].items()},
            allreduce={int(k): build(AllReduceCurve, v) for k, v in data["allreduce"].items()},
            fit_report=data.get("fit_report", {}),
        )

    def write(self, path: Path | str) -> None:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, width=120, default_flow_style=None)
        Path(path).write_text(HEADER + text, encoding="utf-8")

    @classmethod
    def read(cls, path: Path | str) -> Calibration:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except FileNotFoundError:
            raise CatalogError(f"{path}: calibration file not found") from None
        except IsADirectoryError:
            raise CatalogError(f"{path}: is a folder, not a calibration file") from None
        except KeyError as err:
            raise CatalogError(f"{path}: not a fleetsim calibration file (no {err.args[0]!r} entry; write one with "
                               "fleetsim calibrate)") from None
        except (AttributeError, TypeError, ValueError, yaml.YAMLError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CatalogError(f"{path}: not a fleetsim calibration file ({first}; write one with fleetsim "
                               "calibrate)") from None


def _calibration_files() -> dict[str, object]:
    """The shipped calibration files by GPU key (file stem); the folder also holds the step-overhead fit."""
    folder = resources.files("sim.perf").joinpath("calibrations")
    return {e.name[:-5]: e for e in folder.iterdir() if e.name.endswith(".yaml") and e.name != "step_overhead.yaml"}


@cache
def shipped_calibration(gpu: str) -> Calibration | None:
    """The shipped calibration of ``gpu`` (a GPU key), or None; parsed on first use only (each file is a
    few hundred kilobytes of YAML, and a run needs one or two)."""
    entry = _calibration_files().get(gpu)
    if entry is None:
        return None
    return Calibration.from_dict(yaml.load(entry.read_text(encoding="utf-8"), Loader=SAFE_LOADER))


def shipped_calibrations() -> dict[str, Calibration]:
    """The calibrations that ship with the package, by GPU key."""
    return {key: shipped_calibration(key) for key in sorted(_calibration_files())}


#: How many GPUs' kernel models :meth:`KernelModel.shared` keeps, and how many sets of decode-table rows (head
#: configurations, KV dtypes and table lengths) each keeps: bounds for a long-lived sweep worker. A set holds the
#: rows of the batch sizes its runs reached, about 7-11 KB each (9 MB for all 1,024 at a 128k context), so a
#: worker holds tens of megabytes in the usual sweep and a few hundred at the very most.
SHARED_MODELS = 4
SHARED_ROW_SETS = 8
_SHARED: dict[tuple[str, bool], KernelModel] = {}


def _recent(cache: dict, key, make, limit: int):
    """``cache[key]`` (made by ``make()`` if missing), kept as the most recently used of at most ``limit``."""
    value = cache.pop(key, None)
    if value is None:
        value = make()
        while len(cache) >= limit:
            del cache[next(iter(cache))]  # the least recently used
    cache[key] = value
    return value


class KernelModel:
    """Operator times in seconds for one GPU, from its spec sheet and a calibration.

    Parameters
    ----------
    gpu
        The GPU whose peaks and bandwidths are used.
    calibration
        Fitted curves: this GPU's own, or those of a measured GPU (spec transfer).
    """

    def __init__(self, gpu: GpuSpec, calibration: Calibration) -> None:
        self.gpu = gpu
        self.calibration = calibration
        self.transferred = calibration.gpu != gpu.key
        self._bw = gpu.memory_bandwidth_gb_s * 1e9
        self._bf16 = gpu.bf16_tflops * 1e12
        self._knot_max: dict[tuple, np.ndarray] = {}
        self._rows: dict[tuple, dict] = {}

    @classmethod
    def for_gpu(cls, gpu: str | GpuSpec, calibrated: bool = True, calibration_file: str | Path | None = None
                ) -> KernelModel:
        """The kernel model of ``gpu``: its shipped calibration if one exists and ``calibrated``, else spec
        transfer from the nearest measured GPU (never from itself when ``calibrated`` is False)."""
        from sim.perf.transfer import transfer_source

        spec = load_catalog().gpus[gpu] if isinstance(gpu, str) else gpu
        if calibration_file is not None:
            return cls(spec, Calibration.read(calibration_file))
        own = shipped_calibration(spec.key) if calibrated else None
        if own is not None:
            return cls(spec, own)
        source = transfer_source(spec, exclude=None if calibrated else spec.key)
        return cls(spec, shipped_calibration(source))

    @classmethod
    def shared(cls, gpu: GpuSpec, calibrated: bool = True) -> KernelModel:
        """:meth:`for_gpu`'s model of a shipped calibration, kept for the process's later runs (the last
        :data:`SHARED_MODELS` GPUs asked for): a sweep then evaluates each envelope and decode table once. Its
        caches hold pure functions of their keys, so a run's results do not depend on what ran before it."""
        return _recent(_SHARED, (gpu.model_dump_json(), calibrated), lambda: cls.for_gpu(gpu, calibrated),
                       SHARED_MODELS)

    def decode_rows(self, key: tuple) -> dict:
        """The decode-attention table rows by batch size of one head configuration and table length (``key``),
        shared by every step model built on this operator model (see :meth:`TransformerStepModel.decode_table`)."""
        return _recent(self._rows, key, dict, SHARED_ROW_SETS)

    # -- operators -------------------------------------------------------------------------------------------

    def _curve(self, dtype: str) -> tuple[GemmCurve, int, float]:
        """(efficiency curve, activation bytes, peak FLOP/s) of GEMMs with ``dtype`` weights.

        W8A8 (fp8, and int8, which borrows the fp8 curve: same byte widths, no int8 table was measured) runs on
        8-bit tensor cores with 8-bit activations; everything else (bf16, fp16, int4 weight-only, and 8-bit
        weights on GPUs without such tensor cores) runs bf16 tensor cores with 16-bit activations.
        """
        compute = compute_dtype(self.gpu, dtype)
        name, act = ("bf16", 2) if compute == "bf16" else ("fp8", 1)
        return self.calibration.gemm[name], act, self.gpu.tensor_flops(compute)

    def _gemm_raw(self, m: float, n: int, k: int, dtype: str) -> float:
        curve, act, peak = self._curve(dtype)
        flops = 2.0 * m * n * k
        moved = n * k * WEIGHT_BYTES[dtype] + m * k * act + m * n * ACT_BYTES
        tc = flops / (peak * curve.compute_efficiency)
        tm = moved / (self._bw * curve.memory_efficiency)
        p = curve.softness
        t = (curve.floor_s + (tc**p + tm**p) ** (1 / p)) * math.exp(
            curve.correction.at(math.log2(m), math.log2(n), math.log2(k)))
        return max(t, flops / peak, moved / self._bw)

    def _gemm_running(self, n: int, k: int, dtype: str) -> np.ndarray:
        """Running maximum of the raw GEMM time over the ``m`` knots (cached per weight shape)."""
        key = (n, k, dtype)
        running = self._knot_max.get(key)
        if running is None:
            knots = self._curve(dtype)[0].correction.knots[0]
            running = np.maximum.accumulate([self._gemm_raw(2.0**x, n, k, dtype) for x in knots])
            self._knot_max[key] = running
        return running

    def gemm_s(self, m: int, n: int, k: int, dtype: str = "bf16") -> float:
        """``y[m, n] = x[m, k] W^T`` with weights in ``dtype`` (bf16, fp16, fp8, int8, int4); ``m`` = tokens."""
        if m <= 0:
            return 0.0
        knots = self._curve(dtype)[0].correction.knots[0]
        running = self._gemm_running(n, k, dtype)
        x = math.log2(m)
        t = self._gemm_raw(m, n, k, dtype)
        if x >= knots[0]:
            j = min(int(np.searchsorted(knots, x, side="right")) - 1, len(knots) - 1)
            t = max(t, float(running[j]))
        return t

    def _slice(self, curve: AttentionCurve, family: str, n_heads: int, n_kv_heads: int, head_dim: int) -> Slice2:
        """The correction over (batch, length) for one head configuration: heads are fixed per model and TP."""
        key = ("slice", family, id(curve), n_heads, n_kv_heads, head_dim)
        section = self._knot_max.get(key)
        if section is None:
            grid = curve.correction
            if family == "prefill":
                fixed = {1: math.log2(n_heads / n_kv_heads), 2: math.log2(n_kv_heads), 4: math.log2(head_dim)}
                section = grid.slice2(0, 3, fixed)
            else:
                section = grid.slice2(0, 2, {1: math.log2(n_kv_heads), 3: math.log2(head_dim)})
            self._knot_max[key] = section
        return section

    def _prefill_raw(self, curve: AttentionCurve, batch_size: int, length: float, n_heads: int, n_kv_heads: int,
                     head_dim: int) -> float:
        """Fitted time of a full causal prefill of ``length`` tokens per sequence (no cached prefix)."""
        flops = 4.0 * batch_size * n_heads * head_dim * length * (length + 1) / 2
        t = curve.floor_s + flops / (self._bf16 * curve.efficiency)
        section = self._slice(curve, "prefill", n_heads, n_kv_heads, head_dim)
        return t * math.exp(section.at(math.log2(batch_size), math.log2(length)))

    def attention_prefill_s(self, batch_size: int, seq_len: int, n_heads: int, n_kv_heads: int, head_dim: int,
                            dtype: str = "bf16", kv_dtype: str = "bf16", cached_len: int = 0) -> float:
        """Causal attention of ``seq_len`` new tokens per sequence over ``cached_len`` cached ones plus themselves
        (FlashAttention; includes writing the new KV).

        A chunk over a cached prefix is priced as the full causal prefill with the same number of (query, key)
        pairs: exact for the measured rows (no prefix), an assumption for chunked prefill (the measured tables
        have no cached-prefix rows).
        """
        if batch_size <= 0 or seq_len <= 0:
            return 0.0
        name, curve = self._attention_curve(self.calibration.attention_prefill, kv_dtype)
        pairs = seq_len * cached_len + seq_len * (seq_len + 1) / 2
        flops = 4.0 * batch_size * n_heads * head_dim * pairs
        kv = (cached_len + seq_len) * 2 * n_kv_heads * head_dim * KV_BYTES[kv_dtype]
        moved = batch_size * (kv + 2 * seq_len * n_heads * head_dim * ACT_BYTES)
        sol = max(flops / self._bf16, moved / self._bw)
        length = (math.sqrt(1 + 8 * pairs) - 1) / 2  # L with L (L + 1) / 2 = pairs
        knots = curve.correction.knots[3]
        running = self._prefill_running(curve, name, batch_size, n_heads, n_kv_heads, head_dim)
        t = self._prefill_raw(curve, batch_size, length, n_heads, n_kv_heads, head_dim)
        x = math.log2(length)
        if x >= knots[0]:
            t = max(t, float(running[min(bisect_right(knots, x) - 1, len(knots) - 1)]))
        return max(t, sol)

    def _attention_curve(self, curves: dict[str, AttentionCurve], kv_dtype: str) -> tuple[str, AttentionCurve]:
        """(name, curve) of an attention family for a KV cache of ``kv_dtype``: fp8 where measured, else bf16."""
        name = "fp8" if KV_BYTES[kv_dtype] == 1 and "fp8" in curves else "bf16"
        return name, curves[name]

    def _prefill_running(self, curve: AttentionCurve, name: str, batch_size: int, n_heads: int, n_kv_heads: int,
                         head_dim: int) -> np.ndarray:
        """Running maximum of the raw prefill time over the length knots (cached per batch and heads)."""
        key = ("prefill", name, batch_size, n_heads, n_kv_heads, head_dim)
        running = self._knot_max.get(key)
        if running is None:
            running = np.maximum.accumulate([self._prefill_raw(curve, batch_size, 2.0**x, n_heads, n_kv_heads,
                                                               head_dim) for x in curve.correction.knots[3]])
            self._knot_max[key] = running
        return running

    # -- what the compiled engine core needs to price steps itself (sim/engine/_core.c) -------------------------

    def gemm_spec(self, n: int, k: int, dtype: str) -> tuple:
        """The constants of :meth:`gemm_s` for one weight shape, for any ``m``: (n, k, weight bytes, activation
        bytes, peak FLOP/s, compute and memory efficiency, softness, floor, bandwidth, the correction's three knot
        axes, its values (row-major) and the running maximum over the ``m`` knots)."""
        curve, act, peak = self._curve(dtype)
        grid = curve.correction
        return (float(n), float(k), float(WEIGHT_BYTES[dtype]), float(act), float(peak),
                float(curve.compute_efficiency), float(curve.memory_efficiency), float(curve.softness),
                float(curve.floor_s), float(self._bw), *(np.asarray(kn, dtype=float) for kn in grid.knots),
                np.ascontiguousarray(grid.values, dtype=float).ravel(),
                np.asarray(self._gemm_running(n, k, dtype), dtype=float))

    def prefill_spec(self, n_heads: int, n_kv_heads: int, head_dim: int, kv_dtype: str) -> tuple:
        """The constants of :meth:`attention_prefill_s` for one sequence at a time: (heads, KV heads, head dim, KV
        bytes, bf16 peak, bandwidth, floor, efficiency, the (batch, length) section's knots and values, the
        running maximum over the length knots)."""
        name, curve = self._attention_curve(self.calibration.attention_prefill, kv_dtype)
        section = self._slice(curve, "prefill", n_heads, n_kv_heads, head_dim)
        return (float(n_heads), float(n_kv_heads), float(head_dim), float(KV_BYTES[kv_dtype]), float(self._bf16),
                float(self._bw), float(curve.floor_s), float(curve.efficiency),
                np.asarray(section.knots_a, dtype=float), np.asarray(section.knots_b, dtype=float),
                np.asarray(section.values, dtype=float).ravel(),
                np.asarray(self._prefill_running(curve, name, 1, n_heads, n_kv_heads, head_dim), dtype=float))

    def allreduce_spec(self, n_gpus: int) -> tuple | None:
        """The constants of :meth:`allreduce_s` over ``n_gpus`` (None: no all-reduce): (GPUs, latency,
        efficiency, link bytes/s, correction knots and values)."""
        if n_gpus <= 1:
            return None
        curve = self._allreduce_curve(n_gpus)
        return (float(n_gpus), float(curve.latency_s), float(curve.efficiency),
                float(self.gpu.interconnect_gb_s * 1e9), np.asarray(curve.correction.knots[0], dtype=float),
                np.asarray(curve.correction.values, dtype=float).ravel())

    def attention_decode_s(self, batch_size: int, kv_len: float, n_heads: int, n_kv_heads: int, head_dim: int,
                           kv_dtype: str = "bf16") -> float:
        """One new token per sequence attending to ``kv_len`` tokens (the batch mean, including the new one)."""
        if batch_size <= 0:
            return 0.0
        name, curve = self._attention_curve(self.calibration.attention_decode, kv_dtype)
        moved = batch_size * (kv_len * 2 * n_kv_heads * head_dim * KV_BYTES[kv_dtype]
                              + 2 * n_heads * head_dim * ACT_BYTES)
        flops = 4.0 * batch_size * kv_len * n_heads * head_dim
        sol = max(flops / self._bf16, moved / self._bw)
        return max(self._decode_monotone(curve, name, batch_size, kv_len, n_heads, n_kv_heads, head_dim, kv_dtype),
                   sol)

    def _kv_running_max(self, curve: AttentionCurve, key: tuple, batch: float, n_heads: int, n_kv_heads: int,
                        head_dim: int, kv_dtype: str) -> list[float]:
        """Running maximum over the KV-length knots of the raw decode time at ``batch`` (cached per batch)."""
        return self._kv_running_maxima(curve, key, [batch], n_heads, n_kv_heads, head_dim, kv_dtype)[0]

    def _kv_running_maxima(self, curve: AttentionCurve, key: tuple, batches: list[float], n_heads: int,
                           n_kv_heads: int, head_dim: int, kv_dtype: str) -> list[list[float]]:
        """:meth:`_kv_running_max` of each of ``batches``, the missing ones evaluated together.

        Elementwise the arithmetic of :meth:`_decode_raw` in the same order (and the C library's ``exp``, as
        :mod:`math`'s), so each value equals the scalar method's to the last bit (tests/test_perf.py).
        """
        missing = sorted({b for b in batches if (*key, b) not in self._knot_max})
        if missing:
            kv = [2.0**x for x in curve.correction.knots[2]]
            section = self._slice(curve, "decode", n_heads, n_kv_heads, head_dim)
            kv_arr = np.array(kv)
            b_col = np.array(missing, dtype=float)[:, None]
            moved = b_col * (kv_arr * 2 * n_kv_heads * head_dim * KV_BYTES[kv_dtype]
                             + 2 * n_heads * head_dim * ACT_BYTES)
            raw = curve.floor_s + moved / (self._bw * curve.efficiency)
            corr = section.at_rows([math.log2(b) for b in missing], libm.log2(kv_arr))
            running = np.maximum.accumulate(raw * libm.exp(corr), axis=1).tolist()
            for b, row in zip(missing, running, strict=True):
                self._knot_max[(*key, b)] = row
        return [self._knot_max[(*key, b)] for b in batches]

    def _decode_monotone(self, curve: AttentionCurve, name: str, batch: float, kv_len: float, n_heads: int,
                         n_kv_heads: int, head_dim: int, kv_dtype: str) -> float:
        """Decode time made non-decreasing in batch and KV length without changing it where it already is.

        ``t1(b, kv)`` = max(raw, running max over the KV knots below, at this batch) is non-decreasing in kv
        (the fitted log-time is convex in log kv between knots). The result takes the max of ``t1`` at this batch
        and at every batch knot below it, which makes it non-decreasing in the batch too (convex in log b between
        knots, as a max of convex functions).
        """
        key = ("decode", name, n_heads, n_kv_heads, head_dim, kv_dtype)
        kb, kk = curve.correction.knots[0], curve.correction.knots[2]
        xk = math.log2(kv_len)
        j = min(bisect_right(kk, xk) - 1, len(kk) - 1) if xk >= kk[0] else -1

        def t1(b: float) -> float:
            t = self._decode_raw(curve, b, kv_len, n_heads, n_kv_heads, head_dim, kv_dtype)
            if j >= 0:
                t = max(t, self._kv_running_max(curve, key, b, n_heads, n_kv_heads, head_dim, kv_dtype)[j])
            return t

        t = t1(batch)
        xb = math.log2(batch)
        for knot in kb:
            if knot > xb:
                break
            t = max(t, t1(2.0**knot))
        return t

    def attention_decode_tables_s(self, batch_sizes: list[int], kv_lens: np.ndarray, n_heads: int, n_kv_heads: int,
                                  head_dim: int, kv_dtype: str = "bf16") -> np.ndarray:
        """:meth:`attention_decode_s` for several batch sizes (>= 1) and an array of mean KV lengths, vectorised:
        one row per batch size, equal to the scalar method up to floating-point rounding.

        Each row is elementwise the same arithmetic whatever the other rows, so it does not depend on which batch
        sizes are asked together; the monotone envelope's batch-knot rows are evaluated once for all of them, which
        is what makes a block of batch sizes cost little more than one.
        """
        kv = np.asarray(kv_lens, dtype=float)
        name, curve = self._attention_curve(self.calibration.attention_decode, kv_dtype)
        key = ("decode", name, n_heads, n_kv_heads, head_dim, kv_dtype)
        section = self._slice(curve, "decode", n_heads, n_kv_heads, head_dim)
        sizes = [int(b) for b in batch_sizes]
        top = math.log2(max(sizes))
        knots = [k for k in curve.correction.knots[0] if k <= top]  # ascending
        # The envelope's rows: each batch size itself, then the batch knots up to the largest.
        bs = [float(b) for b in sizes] + [2.0**k for k in knots]
        running = np.array(self._kv_running_maxima(curve, key, bs, n_heads, n_kv_heads, head_dim, kv_dtype))
        kk = np.asarray(section.knots_b)
        xk = libm.log2(kv)
        corr = section.at_rows([math.log2(b) for b in bs], xk)
        per_token = 2 * n_kv_heads * head_dim * KV_BYTES[kv_dtype]
        raw_moved = np.array(bs)[:, None] * (kv * per_token + 2 * n_heads * head_dim * ACT_BYTES)
        t = (curve.floor_s + raw_moved / (self._bw * curve.efficiency)) * libm.exp(corr)
        jr = np.minimum(np.searchsorted(kk, xk, side="right") - 1, len(kk) - 1)
        t = np.where(xk < kk[0], t, np.maximum(t, running[:, np.maximum(jr, 0)]))
        n = len(sizes)
        envelope = t[:n]
        if knots:  # each batch size's own row against the running maximum of the knot rows at or below it
            below = np.maximum.accumulate(t[n:], axis=0)
            last = np.array([bisect_right(knots, math.log2(b)) - 1 for b in sizes])
            has = last >= 0
            envelope = np.where(has[:, None], np.maximum(envelope, below[np.maximum(last, 0)]), envelope)
        b_col = np.array(sizes, dtype=float)[:, None]
        moved = b_col * (kv * per_token + 2 * n_heads * head_dim * ACT_BYTES)
        flops = 4.0 * b_col * kv * n_heads * head_dim
        sol = np.maximum(flops / self._bf16, moved / self._bw)
        return np.maximum(envelope, sol)

    def _decode_raw(self, curve: AttentionCurve, batch_size: float, kv_len: float, n_heads: int, n_kv_heads: int,
                    head_dim: int, kv_dtype: str) -> float:
        moved = batch_size * (kv_len * 2 * n_kv_heads * head_dim * KV_BYTES[kv_dtype]
                              + 2 * n_heads * head_dim * ACT_BYTES)
        t = curve.floor_s + moved / (self._bw * curve.efficiency)
        section = self._slice(curve, "decode", n_heads, n_kv_heads, head_dim)
        return t * math.exp(section.at(math.log2(batch_size), math.log2(kv_len)))

    def _allreduce_curve(self, n_gpus: int) -> AllReduceCurve:
        """The curve measured at ``n_gpus``, else at the nearest GPU count in log space."""
        curves = self.calibration.allreduce
        return curves.get(n_gpus) or curves[min(curves, key=lambda n: abs(math.log2(n) - math.log2(n_gpus)))]

    def allreduce_s(self, n_bytes: float, n_gpus: int) -> float:
        """All-reduce of ``n_bytes`` across ``n_gpus`` GPUs of one node (vLLM custom all-reduce / NCCL)."""
        if n_gpus <= 1 or n_bytes <= 0:
            return 0.0
        curve = self._allreduce_curve(n_gpus)
        bus_bytes = 2 * (n_gpus - 1) / n_gpus * n_bytes
        link = self.gpu.interconnect_gb_s * 1e9
        t = curve.latency_s + bus_bytes / (link * curve.efficiency) * math.exp(curve.correction.at(math.log2(n_bytes)))
        return max(t, bus_bytes / link)

    def elementwise_s(self, n_bytes: float) -> float:
        """A memory-bound kernel moving ``n_bytes`` (norms, activations): AIC's analytic rule."""
        if n_bytes <= 0:
            return 0.0
        return n_bytes / (self._bw * ELEMENTWISE_MEMORY_EFFICIENCY) + ELEMENTWISE_FLOOR_S

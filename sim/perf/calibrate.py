"""Fit a :class:`~sim.perf.kernel.Calibration` to measured operator tables, and measure its error.

Inputs are normalised into four frames (seconds, our column names):

- ``gemm``: ``m, n, k, dtype (bf16|fp8), latency_s``
- ``prefill``: ``batch_size, seq_len, n_heads, n_kv_heads, head_dim, kv_dtype, latency_s`` (no cached prefix)
- ``decode``: ``batch_size, kv_len, n_heads, n_kv_heads, head_dim, kv_dtype, latency_s`` (kv_len includes the
  new token)
- ``allreduce``: ``n_bytes, n_gpus, latency_s``

Sources: NVIDIA AIConfigurator's vLLM tables (:func:`read_aiconfigurator`) or a plain CSV of your own
(:func:`read_csv_measurements`). Caveats of the AIC data handled here (see the project's calibration notes):
fp8_block GEMMs are eager-mode timings and are dropped; only the default vLLM kernels are kept (FA3 on Hopper,
FA2 on Ada, CUTLASS fp8); L40S decode rows whose KV footprint fits in its 96 MB L2 are dropped (the benchmark
reuses one buffer, real serving does not); eager custom all-reduce rows are dropped; vLLM's custom all-reduce
serves messages up to 8 MiB and NCCL the larger ones.

Held-out evaluation: a random 20% of rows plus whole held-out groups (10% of GEMM (n, k) shapes; 2 prefill
sequence lengths; 2 decode KV lengths) are left out of the fit, and errors are reported on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from sim.catalog import GpuSpec
from sim.errors import TraceError
from sim.perf.curves import LogGrid, bound_growth, fit_grid, isotonic_increasing, octave_knots
from sim.perf.kernel import ACT_BYTES, AllReduceCurve, AttentionCurve, Calibration, GemmCurve, KernelModel
from sim.workload.traces import plain

GEMM_KERNELS = {"bfloat16": ("bf16", "torch.nn.functional.linear"), "fp8": ("fp8", "CutlassFP8ScaledMMLinearKernel")}
ATTENTION_KERNELS = {"hopper": "vllm_flash_attn_fa3", "ada": "vllm_flash_attn_fa2"}
L2_RESIDENT_BYTES = {"l40s": 130e6}  # decode footprints below this are L2-resident artefacts
CUSTOM_ALLREDUCE_MAX_BYTES = 8 * 2**20
DTYPE = {"bfloat16": "bf16", "fp8": "fp8", "float16": "bf16", "half": "bf16"}
#: Attention corrections: log2 of parallel units (1 .. 64k), of KV length (1 .. 128k), of head_dim (64 .. 512).
#: Prefill correction knots, log2 of: batch 1-256 and heads per KV head 1-64 (every 2 octaves), KV heads 1-64,
#: length 1-16k, head_dim 64-512.
PREFILL_KNOTS = (octave_knots(0, 8, 2), octave_knots(0, 6, 2), octave_knots(0, 6), octave_knots(0, 14),
                 octave_knots(6, 9))
#: Decode correction knots, log2 of: batch 1-2048, KV heads 1-16, KV length 1-128k, head_dim 64-512.
DECODE_KNOTS = (octave_knots(0, 11), octave_knots(0, 4), octave_knots(0, 17), octave_knots(6, 9))
GROWTH_LIMIT = 0.95 * math.log(2)  # efficiency may rise at most ~2x per octave of work: keeps time monotone


@dataclass
class Tables:
    """Measured operator latencies of one GPU, in seconds."""

    gemm: pd.DataFrame
    prefill: pd.DataFrame
    decode: pd.DataFrame
    allreduce: pd.DataFrame
    source: str = ""


def _version(text: str) -> tuple[int, ...]:
    """'0.24.0' -> (0, 24, 0); non-numeric parts are ignored."""
    return tuple(int(x) for x in text.split(".") if x.isdigit())


def _newest(folder: Path, pattern: str) -> Path | None:
    """The match under the highest version folder (the first path part below ``folder``)."""
    found = sorted(folder.glob(pattern), key=lambda p: _version(p.relative_to(folder).parts[0]))
    return found[-1] if found else None


def read_aiconfigurator(root: Path | str, gpu: str, architecture: str) -> Tables:
    """The vLLM tables of ``gpu`` under an AIConfigurator ``systems`` data folder (newest vLLM version)."""
    root = Path(root)
    base = root / gpu if (root / gpu).is_dir() else root
    if not (base / "vllm").is_dir():
        raise TraceError(str(base), 0, f"no vllm/ folder of AIConfigurator tables for {gpu}")

    def table(pattern: str) -> pd.DataFrame:
        path = _newest(base / "vllm", pattern)
        if path is None:
            raise TraceError(str(base / "vllm"), 0, f"missing table {pattern}")
        return pd.read_parquet(path)

    g = table("*/gemm/gemm_perf.parquet")
    gemm = []
    for aic_dtype, (dtype, kernel) in GEMM_KERNELS.items():
        rows = g[(g["gemm_dtype"] == aic_dtype) & (g["kernel_source"] == kernel)]
        gemm.append(pd.DataFrame({"m": rows["m"], "n": rows["n"], "k": rows["k"], "dtype": dtype,
                                  "latency_s": rows["latency"] * 1e-3}))

    kernel = ATTENTION_KERNELS.get(architecture)

    def attention(frame: pd.DataFrame) -> pd.DataFrame:
        keep = (frame["window_size"] == 0) & (frame["beam_width"] == 1)
        if kernel is not None:
            keep &= frame["kernel_source"] == kernel
        return frame[keep]

    c = attention(table("*/attention/context_attention_perf.parquet"))
    prefill = pd.DataFrame({
        "batch_size": c["batch_size"], "seq_len": c["isl"], "n_heads": c["num_heads"],
        "n_kv_heads": c["num_key_value_heads"], "head_dim": c["head_dim"],
        "kv_dtype": c["kv_cache_dtype"].map(DTYPE), "latency_s": c["latency"] * 1e-3})
    d = attention(table("*/attention/generation_attention_perf.parquet"))
    decode = pd.DataFrame({
        "batch_size": d["batch_size"], "kv_len": d["step"] + 1, "n_heads": d["num_heads"],
        "n_kv_heads": d["num_key_value_heads"], "head_dim": d["head_dim"],
        "kv_dtype": d["kv_cache_dtype"].map(DTYPE), "latency_s": d["latency"] * 1e-3})
    l2 = L2_RESIDENT_BYTES.get(gpu)
    if l2:
        decode = decode[decode_bytes(decode) > l2]

    ar = []
    custom = _newest(base / "vllm", "*/comm/custom_allreduce_perf.parquet")
    if custom is not None:
        x = pd.read_parquet(custom)
        x = x[(x["kernel_source"] == "vLLM_custom_graph") & (2 * x["message_size"] <= CUSTOM_ALLREDUCE_MAX_BYTES)]
        ar.append(pd.DataFrame({"n_bytes": 2 * x["message_size"], "n_gpus": x["num_gpus"],
                                "latency_s": x["latency"] * 1e-3}))
    nccl = _newest(base / "nccl", "*/comm/nccl_perf.parquet") if (base / "nccl").is_dir() else None
    if nccl is not None:
        x = pd.read_parquet(nccl)
        x = x[(x["op_name"] == "all_reduce") & (x["nccl_dtype"] == "half")
              & (2 * x["message_size"] > CUSTOM_ALLREDUCE_MAX_BYTES)]
        ar.append(pd.DataFrame({"n_bytes": 2 * x["message_size"], "n_gpus": x["num_gpus"],
                                "latency_s": x["latency"] * 1e-3}))
    allreduce = pd.concat(ar, ignore_index=True) if ar else pd.DataFrame(columns=["n_bytes", "n_gpus", "latency_s"])
    return Tables(pd.concat(gemm, ignore_index=True), prefill.reset_index(drop=True), decode.reset_index(drop=True),
                  allreduce, source=f"NVIDIA AIConfigurator vLLM tables ({base})")


CSV_COLUMNS = ["op", "m", "n", "k", "dtype", "batch_size", "seq_len", "kv_len", "n_heads", "n_kv_heads", "head_dim",
               "kv_dtype", "n_bytes", "n_gpus", "latency_s"]


CSV_INTEGER = {"gemm": ("m", "n", "k"), "prefill": ("batch_size", "seq_len", "n_heads", "n_kv_heads", "head_dim"),
                "decode": ("batch_size", "n_heads", "n_kv_heads", "head_dim"), "allreduce": ("n_gpus",)}
CSV_POSITIVE = {"decode": ("kv_len",), "allreduce": ("n_bytes",)}
CSV_DTYPES = {"gemm": "dtype", "prefill": "kv_dtype", "decode": "kv_dtype"}


def check_measurements(frame: pd.DataFrame, path: str) -> None:
    """Shape columns are positive numbers (integers where they count things; all-reduce over at least 2 GPUs)
    and dtypes are bf16 or fp8; raises :class:`TraceError` naming the line of the first bad row."""
    for op in CSV_INTEGER:
        rows = frame[frame["op"] == op]
        if not len(rows):
            continue
        for col in (*CSV_INTEGER[op], *CSV_POSITIVE.get(op, ())):
            values = pd.to_numeric(rows[col], errors="coerce").to_numpy(float)
            integer = col in CSV_INTEGER[op]
            if integer:
                low, need = (2, "an integer >= 2") if col == "n_gpus" else (1, "a positive integer")
                bad = ~((values >= low) & np.isfinite(values)) | (np.round(values) != values)
            else:
                need = "a positive number"
                bad = ~((values > 0) & np.isfinite(values))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise TraceError(path, int(rows.index[i]) + 2, f"{op} row: {col} must be {need}, "
                                                               f"got {plain(rows[col].iloc[i])!r}")
        dcol = CSV_DTYPES.get(op)
        if dcol is not None:
            bad = ~rows[dcol].isin(["bf16", "fp8"]).to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise TraceError(path, int(rows.index[i]) + 2, f"{op} row: {dcol} must be bf16 or fp8, "
                                                               f"got {plain(rows[dcol].iloc[i])!r}")


def read_csv_measurements(path: Path | str) -> Tables:
    """Your own measurements: a CSV with columns ``op`` (gemm, prefill, decode, allreduce), the shape columns
    that op needs (see :data:`CSV_COLUMNS`; others may be empty) and ``latency_s``."""
    path = str(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise TraceError(path, 0, f"cannot read measurements CSV: {str(err).splitlines()[0]}") from None
    need = {"gemm": ["m", "n", "k", "dtype"], "prefill": ["batch_size", "seq_len", "n_heads", "n_kv_heads", "head_dim",
                                                          "kv_dtype"],
            "decode": ["batch_size", "kv_len", "n_heads", "n_kv_heads", "head_dim", "kv_dtype"],
            "allreduce": ["n_bytes", "n_gpus"]}
    if "op" not in frame or "latency_s" not in frame:
        raise TraceError(path, 1, "needs columns op and latency_s")
    bad = ~frame["op"].isin(need)
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2
        raise TraceError(path, line, f"op must be one of {sorted(need)}, got {plain(frame['op'][bad].iloc[0])!r}")
    lat = pd.to_numeric(frame["latency_s"], errors="coerce")
    if (~(lat > 0)).any():
        line = int(np.flatnonzero(~(lat > 0))[0]) + 2
        raise TraceError(path, line, "latency_s must be a positive number (seconds)")
    check_measurements(frame, path)
    parts = {}
    for op, cols in need.items():
        rows = frame[frame["op"] == op]
        missing = [c for c in cols if c not in frame or rows[c].isna().any()]
        if len(rows) and missing:
            raise TraceError(path, 0, f"{op} rows need columns {missing}")
        parts[op] = rows[[*cols, "latency_s"]].reset_index(drop=True)
    return Tables(parts["gemm"], parts["prefill"], parts["decode"], parts["allreduce"], source=f"CSV {path}")


# -- work of each row (what the roofline sees) --------------------------------------------------------------------

def decode_bytes(d: pd.DataFrame) -> np.ndarray:
    kvb = np.where(d["kv_dtype"] == "fp8", 1, 2)
    return (d["batch_size"] * (d["kv_len"] * 2 * d["n_kv_heads"] * d["head_dim"] * kvb
                               + 2 * d["n_heads"] * d["head_dim"] * ACT_BYTES)).to_numpy(float)


def prefill_flops(p: pd.DataFrame) -> np.ndarray:
    s = p["seq_len"].to_numpy(float)
    heads = (p["n_heads"] * p["head_dim"]).to_numpy(float)
    return 4.0 * p["batch_size"].to_numpy(float) * heads * (s * (s + 1) / 2)


def _log2(frame: pd.DataFrame, *columns: str) -> list[np.ndarray]:
    return [np.log2(frame[c].to_numpy(float)) for c in columns]


def prefill_coords(p: pd.DataFrame) -> list[np.ndarray]:
    """log2 of (batch, heads per KV head, KV heads, sequence length, head_dim): the prefill correction's axes."""
    b, h, kv, s, d = _log2(p, "batch_size", "n_heads", "n_kv_heads", "seq_len", "head_dim")
    return [b, h - kv, kv, s, d]


def decode_coords(d: pd.DataFrame) -> list[np.ndarray]:
    """log2 of (batch, KV heads, KV length, head_dim): the decode correction's axes."""
    return _log2(d, "batch_size", "n_kv_heads", "kv_len", "head_dim")


def holdout_mask(frame: pd.DataFrame, group: list[str] | None, rng: np.random.Generator, n_groups: float,
                 row_fraction: float = 0.2) -> np.ndarray:
    """Rows left out of the fit: a random ``row_fraction`` of rows plus whole groups (a fraction < 1, or a
    count >= 1 of distinct values of ``group``)."""
    held = rng.random(len(frame)) < row_fraction
    if group:
        keys = frame[group].drop_duplicates().to_numpy()
        count = round(n_groups * len(keys)) if n_groups < 1 else int(n_groups)
        chosen = keys[rng.choice(len(keys), size=min(count, len(keys)), replace=False)]
        held |= frame[group].apply(tuple, axis=1).isin([tuple(c) for c in chosen]).to_numpy()
    return held


# -- fitting ---------------------------------------------------------------------------------------------------

def _fit_gemm(rows: pd.DataFrame, peak: float, bw: float, weight_bytes: float, act_bytes: float) -> GemmCurve:
    m, n, k = (rows[c].to_numpy(float) for c in "mnk")
    t = rows["latency_s"].to_numpy(float)
    flops, moved = 2 * m * n * k, n * k * weight_bytes + m * k * act_bytes + m * n * ACT_BYTES

    def base(q):
        ec, em, p, floor = q
        return floor + ((flops / (peak * ec)) ** p + (moved / (bw * em)) ** p) ** (1 / p)

    fit = least_squares(lambda q: np.log(base(q)) - np.log(t), [0.8, 0.8, 3.0, 2e-6],
                        bounds=([0.05, 0.05, 1.0, 0.0], [1.0, 1.5, 20.0, 1e-4]), loss="soft_l1", f_scale=0.1)
    knots = (octave_knots(0, 15), octave_knots(5, 16), octave_knots(5, 16))
    grid = fit_grid([np.log2(m), np.log2(n), np.log2(k)], np.log(t) - np.log(base(fit.x)), knots)
    ec, em, p, floor = (float(v) for v in fit.x)
    # Make the predicted time non-decreasing in m at the knots of every (n, k) column (isotonic regression
    # in log time), so that single slow rows (another kernel picked at m = 2) do not lift all larger m.
    mk, nk, kk = (np.exp2(np.asarray(x)) for x in knots)
    values = grid.values.copy()
    for a, n_val in enumerate(nk):
        for b, k_val in enumerate(kk):
            fl, mv = 2 * mk * n_val * k_val, n_val * k_val * weight_bytes + mk * k_val * act_bytes + mk * n_val * 2
            log_base = np.log(floor + ((fl / (peak * ec)) ** p + (mv / (bw * em)) ** p) ** (1 / p))
            values[:, a, b] = isotonic_increasing(log_base + values[:, a, b]) - log_base
    return GemmCurve(ec, em, p, floor, LogGrid(knots, values))


def _fit_attention(work: np.ndarray, coords_log2: list[np.ndarray], t: np.ndarray, rate: float,
                   knots: tuple[tuple[float, ...], ...], smooth: float) -> AttentionCurve:
    """``time = (floor + work / (rate x efficiency)) x exp(correction)``: a robust fit of efficiency and floor,
    then the correction surface on the log residuals (the kernel model keeps time monotone at evaluation)."""
    def base(q):
        eff, floor = q
        return floor + work / (rate * eff)

    fit = least_squares(lambda q: np.log(base(q)) - np.log(t), [0.5, 1e-5], bounds=([0.01, 0.0], [1.5, 1e-3]),
                        loss="soft_l1", f_scale=0.1)
    grid = fit_grid(coords_log2, np.log(t) - np.log(base(fit.x)), knots, smooth=smooth)
    return AttentionCurve(float(fit.x[0]), float(fit.x[1]), grid)


def _fit_allreduce(rows: pd.DataFrame, link: float) -> AllReduceCurve:
    n_bytes = rows["n_bytes"].to_numpy(float)
    n = rows["n_gpus"].to_numpy(float)
    t = rows["latency_s"].to_numpy(float)
    bus = 2 * (n - 1) / n * n_bytes

    def base(q):
        lat, eff = q
        return lat + bus / (link * eff)

    fit = least_squares(lambda q: np.log(base(q)) - np.log(t), [5e-6, 0.5], bounds=([0.0, 1e-4], [1e-3, 2.0]))
    grid = fit_grid([np.log2(n_bytes)], np.log(t) - np.log(base(fit.x)), (octave_knots(8, 31),))
    grid = bound_growth(grid, 0, GROWTH_LIMIT)
    return AllReduceCurve(float(fit.x[0]), float(fit.x[1]), grid)


def fit_calibration(tables: Tables, gpu: GpuSpec, train: dict[str, np.ndarray] | None = None) -> Calibration:
    """Fit every operator family present in ``tables`` (on the rows ``train`` marks, default all)."""
    def rows(name: str) -> pd.DataFrame:
        frame = getattr(tables, name)
        return frame if train is None else frame[train[name]]

    bw = gpu.memory_bandwidth_gb_s * 1e9
    gemm = {}
    g = rows("gemm")
    for dtype, peak, wb, ab in (("bf16", gpu.bf16_tflops, 2, 2), ("fp8", gpu.fp8_tflops, 1, 1)):
        part = g[g["dtype"] == dtype]
        if len(part) and peak:
            gemm[dtype] = _fit_gemm(part, peak * 1e12, bw, wb, ab)
    prefill = {}
    p = rows("prefill")
    for kv in ("bf16", "fp8"):
        part = p[p["kv_dtype"] == kv]
        if len(part):
            prefill[kv] = _fit_attention(prefill_flops(part), prefill_coords(part), part["latency_s"].to_numpy(float),
                                         gpu.bf16_tflops * 1e12, PREFILL_KNOTS, smooth=0.3)
    decode = {}
    d = rows("decode")
    for kv in ("bf16", "fp8"):
        part = d[d["kv_dtype"] == kv]
        if len(part):
            work = decode_bytes(part)
            decode[kv] = _fit_attention(work, decode_coords(part), part["latency_s"].to_numpy(float), bw,
                                        DECODE_KNOTS, smooth=1.0)
    allreduce = {}
    a = rows("allreduce")
    for n_gpus, part in a.groupby("n_gpus"):
        allreduce[int(n_gpus)] = _fit_allreduce(part, gpu.interconnect_gb_s * 1e9)
    missing = [name for name, got in (("gemm.bf16", "bf16" in gemm), ("attention_prefill", prefill),
                                      ("attention_decode", decode)) if not got]
    if missing:
        raise TraceError(tables.source, 0, f"not enough measurements to fit {', '.join(missing)}")
    notes = []
    if gpu.key == "l40s":
        notes.append("4- and 8-GPU all-reduce rows come from a node without usable GPU peer-to-peer (bus bandwidth "
                     "2-5 GB/s): topology-specific, not generic to the L40S.")
    return Calibration(gpu.key, tables.source, gemm, prefill, decode, allreduce, tuple(notes))


# -- evaluation ------------------------------------------------------------------------------------------------

def predictions(km: KernelModel, tables: Tables) -> pd.DataFrame:
    """Predicted and measured latency of every row: ``family, dtype, measured_s, predicted_s``."""
    out = []
    g = tables.gemm
    out.append(pd.DataFrame({"family": "gemm", "dtype": g["dtype"], "measured_s": g["latency_s"],
                             "predicted_s": [km.gemm_s(int(m), int(n), int(k), dt) for m, n, k, dt in
                                             zip(g["m"], g["n"], g["k"], g["dtype"], strict=True)]}))
    p = tables.prefill
    out.append(pd.DataFrame({"family": "attention_prefill", "dtype": p["kv_dtype"], "measured_s": p["latency_s"],
                             "predicted_s": [km.attention_prefill_s(int(b), int(s), int(h), int(kv), int(d), "bf16", kd)
                                             for b, s, h, kv, d, kd in zip(p["batch_size"], p["seq_len"], p["n_heads"],
                                                                           p["n_kv_heads"], p["head_dim"],
                                                                           p["kv_dtype"], strict=True)]}))
    d = tables.decode
    out.append(pd.DataFrame({"family": "attention_decode", "dtype": d["kv_dtype"], "measured_s": d["latency_s"],
                             "predicted_s": [km.attention_decode_s(int(b), float(kv), int(h), int(nk), int(hd), kd)
                                             for b, kv, h, nk, hd, kd in zip(d["batch_size"], d["kv_len"], d["n_heads"],
                                                                             d["n_kv_heads"], d["head_dim"],
                                                                             d["kv_dtype"], strict=True)]}))
    a = tables.allreduce
    out.append(pd.DataFrame({"family": "allreduce", "dtype": a["n_gpus"].map(lambda n: f"{int(n)}gpu"),
                             "measured_s": a["latency_s"],
                             "predicted_s": [km.allreduce_s(float(b), int(n)) for b, n in
                                             zip(a["n_bytes"], a["n_gpus"], strict=True)]}))
    frame = pd.concat(out, ignore_index=True)
    frame["ape"] = (frame["predicted_s"] / frame["measured_s"] - 1).abs()
    return frame


def holdout_split(tables: Tables, seed: int = 0) -> dict[str, np.ndarray]:
    """Held-out masks per table (True = left out of the fit)."""
    rng = np.random.default_rng(seed)
    return {
        "gemm": holdout_mask(tables.gemm, ["n", "k"], rng, 0.1),
        "prefill": holdout_mask(tables.prefill, ["seq_len"], rng, 2),
        "decode": holdout_mask(tables.decode, ["kv_len"], rng, 2),
        "allreduce": holdout_mask(tables.allreduce, None, rng, 0),
    }


def error_table(pred: pd.DataFrame) -> pd.DataFrame:
    """Median and p90 absolute percentage error per family and dtype."""
    return pred.groupby(["family", "dtype"]).agg(
        rows=("ape", "size"), median_ape=("ape", "median"), p90_ape=("ape", lambda x: float(np.quantile(x, 0.9))),
    ).reset_index()


def calibrate(tables: Tables, gpu: GpuSpec, seed: int = 0) -> tuple[Calibration, pd.DataFrame]:
    """Fit on the training rows; return the calibration and the held-out error table (stored in it too)."""
    held = holdout_split(tables, seed)
    cal = fit_calibration(tables, gpu, {name: ~mask for name, mask in held.items()})
    # Measure exactly what is written: the file stores rounded knot values.
    cal = Calibration.from_dict(cal.to_dict())
    km = KernelModel(gpu, cal)
    pred = predictions(km, tables)
    pred["held_out"] = np.concatenate([held["gemm"], held["prefill"], held["decode"], held["allreduce"]])
    errors = error_table(pred[pred["held_out"]])
    report = {f"{r.family}/{r.dtype}": {"held_out_rows": int(r.rows), "median_ape": round(float(r.median_ape), 4),
                                        "p90_ape": round(float(r.p90_ape), 4)} for r in errors.itertuples()}
    cal = Calibration(cal.gpu, cal.source, cal.gemm, cal.attention_prefill, cal.attention_decode, cal.allreduce,
                      cal.notes, fit_report={"seed": seed, "held_out": report})
    return cal, errors

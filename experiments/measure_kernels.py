"""Measure GPU operator latencies with PyTorch and write them in fleetsim's calibration-CSV format.

Runs on a machine with a CUDA GPU (it is a stand-alone script: the ``sim`` package never imports it)::

    python experiments/measure_kernels.py --out data/validation/h200_ops.csv [--quick]

Method (modelled on NVIDIA AIConfigurator's collector, which produced the H100 data fleetsim is fitted on):

- Every operator is captured in a CUDA graph and timed on graph replay with CUDA events, after warm-up
  replays; the figure is the median over repeats of (replay time / operators in the graph).
- GEMMs rotate over distinct weight copies (at least ~256 MB in all, up to 16 copies) so that a weight is
  never L2-resident when it is read, as in a real forward pass; decode attention likewise rotates over
  distinct KV caches. Inputs are random normal (never zeros).
- bf16 GEMM: ``torch.nn.functional.linear`` (cuBLAS). fp8 GEMM: W8A8 with per-tensor scales through
  ``torch._scaled_mm`` (cuBLASLt), *including* the dynamic per-tensor activation quantisation (amax, scale,
  cast; ``torch.compile``-fused where that works) as vLLM's fp8 latency does.
- Prefill attention: ``scaled_dot_product_attention(is_causal=True, enable_gqa=True)`` with PyTorch's default
  backend dispatch (``--prefill-backend`` restricts it to one SDPA backend), plus the write of the new K and V
  into a cache (vLLM's figure includes that write).
- Decode attention: one query token per sequence over a contiguous KV cache with SDPA (default dispatch, GQA
  through ``enable_gqa``), plus the write of the new token's K and V. This is NOT vLLM's paged
  FlashAttention-3 kernel: differences from the model include the kernel choice.

Side measurements (each SDPA backend forced in turn, GEMM-only and quant-only fp8 times, the backend the default
dispatch picked) go to a JSON file next to the CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

CSV_COLUMNS = ["op", "m", "n", "k", "dtype", "batch_size", "seq_len", "kv_len", "n_heads", "n_kv_heads", "head_dim",
               "kv_dtype", "n_bytes", "n_gpus", "latency_s"]
MIN_ROTATION_BYTES = 256e6  # data touched per rotation cycle: several times a 50-60 MB L2
MAX_COPIES = 16
MIN_OPS_PER_GRAPH = 16
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0

#: (name, n, k) of Llama-3-8B and Llama-3-70B linear layers (TP = 1; 70B's are the full, unsharded shapes).
GEMM_SHAPES = [
    ("8b_qkv", 6144, 4096), ("8b_o", 4096, 4096), ("8b_gate_up", 28672, 4096), ("8b_down", 4096, 14336),
    ("70b_qkv", 10240, 8192), ("70b_o", 8192, 8192), ("70b_gate_up", 57344, 8192), ("70b_down", 8192, 28672),
]
GEMM_M = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
PREFILL_BATCH = [1, 2, 4, 8]
PREFILL_SEQ = [256, 512, 1024, 2048, 4096, 8192]
DECODE_BATCH = [1, 2, 4, 8, 16, 32, 64, 128, 256]
DECODE_KV = [128, 512, 2048, 8192, 32768]
MAX_DECODE_TOKENS = 2**22  # b x kv_len cap (17 GB of bf16 KV for 8 kv-heads x d128)
CHOICES: dict[str, set] = {}  # SDPA backends the default dispatch picked, per family
_WARNED: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = f"{category.__name__}: {str(message)[:300]}"
    if text not in _WARNED:
        _WARNED.add(text)
        log(f"warning (shown once): {text}")


def log(*args) -> None:
    print(*args, flush=True)


def time_graph(fn, ops: int, warmup: int = 3, repeats: int | None = None) -> float:
    """Median seconds per operator: ``fn`` (which launches ``ops`` operators) captured in a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # eager warm-up outside the graph (handles, autotuning, compilation)
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(warmup):
        graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    one = start.elapsed_time(end) * 1e-3
    if repeats is None:
        repeats = 30 if one < 2e-3 else 10 if one < 50e-3 else 5
    times = []
    for _ in range(repeats):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    del graph
    return statistics.median(times) / ops


def copies_for(nbytes: float) -> int:
    return max(1, min(MAX_COPIES, math.ceil(MIN_ROTATION_BYTES / max(nbytes, 1))))


def plan(copies: int, flops: float, nbytes: float) -> tuple[int, int]:
    """(passes over the copies, operators per graph): short operators (under ~50 us by a rough roofline) are
    repeated until a graph holds at least MIN_OPS_PER_GRAPH of them, so launch gaps and event resolution wash out."""
    short = max(flops / 700e12, nbytes / 3.5e12) < 50e-6
    passes = max(1, math.ceil(MIN_OPS_PER_GRAPH / copies)) if short else 1
    return passes, passes * copies


def row(op: str, latency: float, **shape) -> dict:
    out = dict.fromkeys(CSV_COLUMNS, "")
    out.update(op=op, latency_s=f"{latency:.6e}", **shape)
    return out


# -- GEMMs --------------------------------------------------------------------------------------------------------

def _quant_eager(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Row-wise, then global amax: a parallel two-stage reduction (a one-stage global amax compiles, with dynamic
    # shapes, to a single-program reduction that is ~20x too slow at m = 4096).
    scale = x.abs().amax(dim=-1).amax().float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def make_quant():
    """The dynamic per-tensor activation quantisation, fused by torch.compile when that works."""
    try:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = 64
        fn = torch.compile(_quant_eager, dynamic=True)
        x = torch.randn(33, 4096, device="cuda", dtype=torch.bfloat16)
        q, _ = fn(x)
        ref, _ = _quant_eager(x)
        torch.cuda.synchronize()
        if not torch.allclose(q.float(), ref.float(), rtol=0.13, atol=1e-2):
            raise RuntimeError("compiled quant differs from eager")
        return fn, "torch.compile"
    except Exception as err:
        log(f"torch.compile quant unavailable ({type(err).__name__}: {str(err)[:200]}); using eager quant")
        return _quant_eager, "eager"


def measure_gemms(ms: list[int], shapes: list, do_fp8: bool, side: dict) -> list[dict]:
    rows: list[dict] = []
    quant, quant_kind = make_quant() if do_fp8 else (None, "")
    side["fp8_quant_impl"] = quant_kind
    side["fp8_gemm_only"], side["fp8_quant_only"] = [], []
    for name, n, k in shapes:
        rows += _measure_shape(name, n, k, ms, quant, side)
        torch.cuda.empty_cache()
    return rows


def _measure_shape(name: str, n: int, k: int, ms: list[int], quant, side: dict) -> list[dict]:
    """bf16 (and fp8 when ``quant``) GEMMs of one (n, k) for every m, rotating over distinct weight copies."""
    rows = []
    wbytes = n * k * 2
    copies = copies_for(wbytes)
    w = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
    w8, scales = [], []
    if quant is not None:
        scales = [(wi.abs().amax().float() / FP8_MAX) for wi in w]
        w8 = [(wi.float() / s).to(FP8) for wi, s in zip(w, scales, strict=True)]

    def scaled_mm(xq, xs, passes):
        for _ in range(passes):
            for wi, si in zip(w8, scales, strict=True):
                torch._scaled_mm(xq, wi.t(), scale_a=xs, scale_b=si, out_dtype=torch.bfloat16, use_fast_accum=True)

    for m in ms:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        passes, ops = plan(copies, 2 * m * n * k, wbytes)

        def bf16(x=x, passes=passes):
            for _ in range(passes):
                for wi in w:
                    F.linear(x, wi)

        t = time_graph(bf16, ops)
        rows.append(row("gemm", t, m=m, n=n, k=k, dtype="bf16"))
        msg = f"gemm {name:12s} m={m:6d} bf16 {t * 1e6:9.1f} us {2 * m * n * k / t / 1e12:6.0f} TF"
        if quant is not None:
            def fp8(x=x, passes=passes):
                for _ in range(passes):
                    for wi, si in zip(w8, scales, strict=True):
                        xq, xs = quant(x)
                        torch._scaled_mm(xq, wi.t(), scale_a=xs, scale_b=si, out_dtype=torch.bfloat16,
                                         use_fast_accum=True)

            try:
                t8 = time_graph(fp8, ops)
            except Exception as err:
                log(f"fp8 gemm failed at m={m} n={n} k={k}: {type(err).__name__}: {str(err)[:300]}")
                log(msg)
                continue
            rows.append(row("gemm", t8, m=m, n=n, k=k, dtype="fp8"))
            msg += f" | fp8+quant {t8 * 1e6:9.1f} us {2 * m * n * k / t8 / 1e12:6.0f} TF"
            if m in (1, 16, 128, 1024, 4096, 16384):
                xq, xs = quant(x)

                def quant_only(x=x):
                    for _ in range(MIN_OPS_PER_GRAPH):
                        quant(x)

                tg = time_graph(lambda xq=xq, xs=xs, passes=passes: scaled_mm(xq, xs, passes), ops)
                tq = time_graph(quant_only, MIN_OPS_PER_GRAPH)
                side["fp8_gemm_only"].append({"m": m, "n": n, "k": k, "latency_s": tg})
                side["fp8_quant_only"].append({"m": m, "k": k, "latency_s": tq})
                msg += f" (gemm {tg * 1e6:.1f} + quant {tq * 1e6:.1f})"
        log(msg)
    return rows


# -- attention --------------------------------------------------------------------------------------------------

def backend(name: str):
    """Restrict SDPA to one backend; ``DEFAULT`` leaves PyTorch's own dispatch."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    return contextlib.nullcontext() if name == "DEFAULT" else sdpa_kernel([getattr(SDPBackend, name)])


def sdpa_choice(q, k, v, is_causal: bool) -> str:
    """The backend PyTorch's default SDPA dispatch picks for these inputs."""
    try:
        from torch.nn.attention import SDPBackend

        return SDPBackend(torch._fused_sdp_choice(q, k, v, is_causal=is_causal, enable_gqa=True)).name
    except Exception as err:
        return f"unknown ({type(err).__name__})"


def measure_prefill(batches: list[int], seqs: list[int], backend_name: str) -> list[dict]:
    rows = []
    for b in batches:
        for s in seqs:
            q = torch.randn(b, HEADS, s, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
            kv = torch.randn(2, b, KV_HEADS, s, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
            cache = torch.empty_like(kv)

            def prefill(q=q, kv=kv, cache=cache):
                for _ in range(4):
                    cache.copy_(kv)  # the KV-cache write of the new tokens
                    with backend(backend_name):
                        F.scaled_dot_product_attention(q, kv[0], kv[1], is_causal=True, enable_gqa=True)

            try:
                t = time_graph(prefill, 4)
            except Exception as err:
                log(f"prefill {backend_name} b={b} s={s} failed: {type(err).__name__}: {str(err)[:300]}")
                continue
            flops = 4 * b * HEADS * HEAD_DIM * s * (s + 1) / 2
            chosen = backend_name
            if backend_name == "DEFAULT":
                chosen = sdpa_choice(q, kv[0], kv[1], True)
                CHOICES.setdefault("prefill", set()).add(chosen)
            log(f"prefill {backend_name:16s} b={b} s={s:5d} {t * 1e6:9.1f} us {flops / t / 1e12:6.0f} TF [{chosen}]")
            rows.append(row("prefill", t, batch_size=b, seq_len=s, n_heads=HEADS, n_kv_heads=KV_HEADS,
                            head_dim=HEAD_DIM, kv_dtype="bf16"))
            del q, kv, cache
    torch.cuda.empty_cache()
    return rows


def measure_decode(batches: list[int], kv_lens: list[int], backend_name: str) -> list[dict]:
    rows = []
    for b in batches:
        for kv_len in kv_lens:
            if b * kv_len > MAX_DECODE_TOKENS:
                continue
            nbytes = b * kv_len * 2 * KV_HEADS * HEAD_DIM * 2
            copies = copies_for(nbytes)
            passes, ops = plan(copies, 4 * b * kv_len * HEADS * HEAD_DIM, nbytes)
            q = torch.randn(b, HEADS, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
            new = torch.randn(2, b, KV_HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
            caches = [torch.randn(2, b, KV_HEADS, kv_len, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
                      for _ in range(copies)]

            def decode(q=q, new=new, caches=caches, kv_len=kv_len, passes=passes):
                for _ in range(passes):
                    for c in caches:
                        c[:, :, :, kv_len - 1].copy_(new)  # the new token's K and V into the cache
                        with backend(backend_name):
                            F.scaled_dot_product_attention(q, c[0], c[1], enable_gqa=True)

            try:
                t = time_graph(decode, ops)
            except Exception as err:
                log(f"decode {backend_name} b={b} kv={kv_len} failed: {type(err).__name__}: {str(err)[:300]}")
                continue
            chosen = backend_name
            if backend_name == "DEFAULT":
                chosen = sdpa_choice(q, caches[0][0], caches[0][1], False)
                CHOICES.setdefault("decode", set()).add(chosen)
            log(f"decode {backend_name:16s} b={b:3d} kv={kv_len:5d} {t * 1e6:9.1f} us {nbytes / t / 1e12:5.2f} TB/s"
                f" (x{copies} caches) [{chosen}]")
            rows.append(row("decode", t, batch_size=b, kv_len=kv_len, n_heads=HEADS, n_kv_heads=KV_HEADS,
                            head_dim=HEAD_DIM, kv_dtype="bf16"))
            del q, new, caches
        torch.cuda.empty_cache()
    return rows


def check_sdpa(backend_name: str) -> float:
    """Relative error of one GQA causal SDPA call on the backend against a float64 reference."""
    q = torch.randn(1, HEADS, 256, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, KV_HEADS, 256, HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    with backend(backend_name):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    rep = HEADS // KV_HEADS
    ref = F.scaled_dot_product_attention(q.double(), k.double().repeat_interleave(rep, 1),
                                         v.double().repeat_interleave(rep, 1), is_causal=True)
    return float((out.double() - ref).norm() / ref.norm())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="h200_ops.csv")
    ap.add_argument("--quick", action="store_true", help="a few shapes only (smoke test)")
    ap.add_argument("--prefill-backend", default="DEFAULT")
    ap.add_argument("--decode-backend", default="DEFAULT")
    ap.add_argument("--other-backends", default="FLASH_ATTENTION,CUDNN_ATTENTION",
                    help="SDPA backends timed on the attention grids for the side file only")
    ap.add_argument("--skip", default="", help="comma list of families to skip: gemm, fp8, prefill, decode, other")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if not torch.cuda.is_available():
        log("no CUDA device")
        return 1
    torch.manual_seed(0)
    warnings.showwarning = _show_warning
    warnings.simplefilter("always")
    torch.backends.cuda.matmul.allow_tf32 = False
    prop = torch.cuda.get_device_properties(0)
    env = {"gpu": torch.cuda.get_device_name(0), "sm_count": prop.multi_processor_count,
           "memory_gib": round(prop.total_memory / 2**30, 1), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "python": sys.version.split()[0]}
    log(json.dumps(env))
    side: dict = {"env": env}
    ms, shapes = GEMM_M, GEMM_SHAPES
    pb, ps, db, dk = PREFILL_BATCH, PREFILL_SEQ, DECODE_BATCH, DECODE_KV
    if args.quick:
        ms, shapes = [1, 17, 4096], GEMM_SHAPES[:2]
        pb, ps, db, dk = [1, 2], [512, 2048], [1, 64], [512, 8192]
    started = time.time()
    rows: list[dict] = []
    sections = [
        ("gemm", lambda: measure_gemms(ms, shapes, "fp8" not in skip, side)),
        ("prefill", lambda: measure_prefill(pb, ps, args.prefill_backend)),
        ("decode", lambda: measure_decode(db, dk, args.decode_backend)),
    ]
    out = Path(args.out)
    for name, fn in sections:
        if name in skip:
            continue
        t0 = time.time()
        try:
            rows += fn()
        except Exception as err:  # keep what the other sections measured
            log(f"section {name} failed: {type(err).__name__}: {err}")
        log(f"== {name}: {time.time() - t0:.0f} s")
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    side["sdpa_check_rel_err"] = {}
    for name in [args.prefill_backend, *args.other_backends.split(",")]:
        try:
            side["sdpa_check_rel_err"][name] = check_sdpa(name)
        except Exception as err:
            side["sdpa_check_rel_err"][name] = f"{type(err).__name__}: {str(err)[:200]}"
    log("SDPA relative error vs float64:", side["sdpa_check_rel_err"])
    if "other" not in skip:
        side["prefill_other_backends"] = {}
        for name in filter(None, args.other_backends.split(",")):
            t0 = time.time()
            side["prefill_other_backends"][name] = measure_prefill(pb, ps, name)
            side.setdefault("decode_other_backends", {})[name] = measure_decode(db, dk, name)
            log(f"== other backend {name}: {time.time() - t0:.0f} s")
    side["sdpa_default_choice"] = {k: sorted(v) for k, v in CHOICES.items()}
    log("SDPA default dispatch:", side["sdpa_default_choice"])
    side["wall_s"] = time.time() - started
    out.with_suffix(".side.json").write_text(json.dumps(side, indent=1))
    log(f"wrote {len(rows)} rows to {out} in {side['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

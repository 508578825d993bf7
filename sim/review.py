"""Capacity-review figures: what one GPU type does for a model at a precision, and published claims checked.

Everything here is a function of the package's kernel model and memory sizing (no model logic lives in notebooks):
:func:`deployment_figures` sizes the smallest tensor-parallel replica that fits and reports its analytic
throughput (:mod:`sim.plan.capacity`) per GPU, alone and at its best batch, and the cost per million output tokens;
:func:`gpu_comparison` tabulates it over models x GPUs x precisions; :func:`check_claims` confronts the figures
that GPU buying guides publish with the simulator's and says, for each, whether it is plausible and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sim.catalog import load_catalog
from sim.cluster.deploy import plan_pools
from sim.errors import FleetsimError
from sim.perf import build_perf_model
from sim.perf.shape import BatchShape
from sim.plan.capacity import replica_capacity
from sim.scenario import validate_scenario

#: Lengths of the chat-like requests the figures assume (the guides state none).
PROMPT_TOKENS, OUTPUT_TOKENS = 512, 256


def _deployment(model: str, gpu: str, precision: str, max_model_len: int):
    """The pool plan of the smallest tensor parallelism (1, 2, 4, 8) at which ``model`` fits on ``gpu``, or None."""
    catalog = load_catalog()
    for tp in (1, 2, 4, 8):
        data = {"name": "review", "workload": {"type": "open_loop", "arrival": {"process": "poisson",
                                                                                "rate_per_s": 1.0},
                                               "num_requests": 1, "prompt_tokens": {"dist": "fixed", "tokens": 1},
                                               "output_tokens": {"dist": "fixed", "tokens": 1}},
                "pools": {"p": {"gpu": gpu, "model": model, "precision": precision, "tensor_parallel": tp,
                                "engine": {"max_model_len": max_model_len}}}}
        try:
            scenario = validate_scenario(data, "review")
        except FleetsimError:
            continue
        return plan_pools(scenario, catalog, "review").pools["p"]
    return None


def deployment_figures(model: str, gpu: str, precision: str, prompt_tokens: int = PROMPT_TOKENS,
                       output_tokens: int = OUTPUT_TOKENS, tpot_s: float = 0.1, concurrency: int | None = None,
                       max_model_len: int = 4096) -> dict:
    """One deployment's figures, per GPU where it says so.

    Returns
    -------
    dict
        ``fits`` (False: the other figures are absent), ``tensor_parallel``, ``kv_tokens``, ``max_batch`` (requests
        of these lengths the KV cache holds), ``single_stream_tok_s`` (one request's decode speed),
        ``peak_tok_s_per_gpu`` (output tokens/s at the best batch, no latency target) and its ``peak_batch``,
        ``slo_tok_s_per_gpu`` (the same within ``tpot_s``), ``usd_per_gpu_hour``, ``usd_per_m_tokens`` (at the SLO
        throughput), and with ``concurrency``, ``tok_s_at_concurrency_per_gpu``.
    """
    plan = _deployment(model, gpu, precision, max_model_len)
    out = {"model": model, "gpu": gpu, "precision": precision, "fits": plan is not None}
    if plan is None:
        return out
    perf = build_perf_model(plan.config, plan.gpu, plan.model, plan.sizing)
    tp = plan.config.tensor_parallel
    kv = plan.sizing.kv_tokens
    budget = plan.sizing.max_num_batched_tokens
    seqs = plan.config.engine.max_num_seqs
    per_request = prompt_tokens + output_tokens
    peak = replica_capacity(perf, prompt_tokens, output_tokens, kv, seqs, budget, None)
    slo = replica_capacity(perf, prompt_tokens, output_tokens, kv, seqs, budget, tpot_s)
    context = prompt_tokens + output_tokens // 2
    out.update({
        "tensor_parallel": tp, "kv_tokens": kv, "max_batch": min(seqs, kv // per_request),
        "single_stream_tok_s": 1.0 / perf.step_time_s(BatchShape((), 1, context, 1)),
        "peak_tok_s_per_gpu": peak.rate_rps * output_tokens / tp, "peak_batch": peak.batch,
        "peak_limited_by": peak.limited_by,
        "slo_tok_s_per_gpu": slo.rate_rps * output_tokens / tp,
        "usd_per_gpu_hour": plan.usd_per_gpu_hour,
    })
    out["usd_per_m_tokens"] = (plan.usd_per_gpu_hour / (out["slo_tok_s_per_gpu"] * 3600) * 1e6
                               if out["slo_tok_s_per_gpu"] else float("nan"))
    if concurrency is not None:
        b = min(concurrency, out["max_batch"])
        fixed = replica_capacity(perf, prompt_tokens, output_tokens, kv, b, budget, None)
        out["tok_s_at_concurrency_per_gpu"] = fixed.rate_rps * output_tokens / tp if fixed.batch == b else (
            float("nan"))
        out["concurrency_held"] = b
    return out


def gpu_comparison(models: list[str], gpus: list[str], precisions: list[str], **kwargs) -> pd.DataFrame:
    """:func:`deployment_figures` for every model x GPU x precision, one row each."""
    return pd.DataFrame([deployment_figures(m, g, p, **kwargs) for m in models for g in gpus for p in precisions])


@dataclass(frozen=True)
class Claim:
    """A published figure: ``low``-``high`` (equal for a point figure) of ``metric`` for a deployment."""

    text: str
    model: str
    gpu: str
    precision: str
    metric: str  # a key of deployment_figures
    low: float
    high: float
    reading: str  # how we read the claim (the guides do not define their figures)
    concurrency: int | None = None


#: Claims from GPU buying guides (issue #8), as the simulator can test them.
CLAIMS = (
    Claim("Llama-2-7B BF16 generates 1,500 tok/s on an L4", "llama-2-7b", "l4", "bf16", "peak_tok_s_per_gpu",
          1500, 1500, "aggregate output tokens/s at the best batch"),
    Claim("... 900 tok/s on a T4", "llama-2-7b", "t4", "bf16", "peak_tok_s_per_gpu", 900, 900,
          "aggregate output tokens/s at the best batch (the T4 has no bf16: fp16 kernels, same bytes)"),
    Claim("... 2,500 tok/s on an L40S", "llama-2-7b", "l40s", "bf16", "peak_tok_s_per_gpu", 2500, 2500,
          "aggregate output tokens/s at the best batch"),
    Claim("... 5,000 tok/s on an H100", "llama-2-7b", "h100_sxm", "bf16", "peak_tok_s_per_gpu", 5000, 5000,
          "aggregate output tokens/s at the best batch"),
    Claim("Llama-2-7B: 2,000 tok/s on an L4 at 128 concurrent requests", "llama-2-7b", "l4", "bf16",
          "tok_s_at_concurrency_per_gpu", 2000, 2000, "aggregate output tokens/s with 128 requests in flight",
          concurrency=128),
    Claim("7B INT4: 2,800 tok/s on an L4", "llama-2-7b", "l4", "int4", "peak_tok_s_per_gpu", 2800, 2800,
          "aggregate output tokens/s at the best batch (W4A16)"),
    Claim("13B INT4: 1,600 tok/s on an L4", "llama-2-13b", "l4", "int4", "peak_tok_s_per_gpu", 1600, 1600,
          "aggregate output tokens/s at the best batch (W4A16)"),
    Claim("a 13B model at 120 tok/s on an RTX 4090", "llama-2-13b", "rtx_4090", "int4", "single_stream_tok_s",
          120, 120, "one request's decode speed; 13B in 16 bits does not fit 24 GB, so INT4"),
    Claim("... 250-400 tok/s on an A100", "llama-2-13b", "a100_80gb_sxm", "bf16", "peak_tok_s_per_gpu", 250, 400,
          "aggregate output tokens/s at the best batch"),
    Claim("a 70B model at 500-800 tok/s on an H100 at its best batch", "llama-2-70b", "h100_sxm", "fp8",
          "peak_tok_s_per_gpu", 500, 800, "aggregate output tokens/s per GPU at the best batch, FP8 (70B in 16 "
          "bits needs two H100s)"),
    Claim("a 13B INT4 model fits with batch 8+ on an L4", "llama-2-13b", "l4", "int4", "max_batch", 8, float("inf"),
          f"requests of {PROMPT_TOKENS} + {OUTPUT_TOKENS} tokens the KV cache holds at once"),
)
#: A claim is consistent when the simulator's figure is within this factor of the claimed range.
TOLERANCE = 1.35


def check_claims(claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """Each claim beside the simulator's figure, with a verdict: ``consistent`` (within x1.35 of the claimed range),
    ``conservative`` (the simulator finds more), ``optimistic`` (less), or ``does not fit``; ``plausible`` is True for
    the first two, and ``why`` says what drives the figure."""
    rows = []
    for c in claims:
        f = deployment_figures(c.model, c.gpu, c.precision, concurrency=c.concurrency)
        if not f["fits"]:
            rows.append({"claim": c.text, "reading": c.reading, "claimed": _range(c), "simulated": float("nan"),
                         "verdict": "does not fit", "plausible": False,
                         "why": f"{c.model} in {c.precision} does not fit {c.gpu} at TP <= 8"})
            continue
        value = f[c.metric]
        if value >= c.low / TOLERANCE and value <= c.high * TOLERANCE:
            verdict = "consistent"
        elif value > c.high * TOLERANCE:
            verdict = "conservative"
        else:
            verdict = "optimistic"
        rows.append({"claim": c.text, "reading": c.reading, "claimed": _range(c), "simulated": value,
                     "verdict": verdict, "plausible": verdict in ("consistent", "conservative"), "why": _why(c, f)})
    return pd.DataFrame(rows)


def _range(c: Claim) -> str:
    if c.high == float("inf"):
        return f">= {c.low:g}"
    return f"{c.low:g}" if c.low == c.high else f"{c.low:g}-{c.high:g}"


def _why(c: Claim, f: dict) -> str:
    tp = f["tensor_parallel"]
    where = f"TP{tp}, " if tp > 1 else ""
    if c.metric == "max_batch":
        return f"{where}{f['kv_tokens']:,} KV tokens after weights and activations"
    if c.metric == "single_stream_tok_s":
        return f"{where}a decode step of one sequence reads all the weights: memory bandwidth bound"
    limits = {"kv_cache": "the KV cache", "max_num_seqs": "max_num_seqs", "tpot": "the step time"}
    if c.metric == "tok_s_at_concurrency_per_gpu":
        held = f["concurrency_held"]
        cut = f"; only {held} of {c.concurrency} fit the KV cache" if held < (c.concurrency or 0) else ""
        return f"{where}batch {held}{cut}; single stream {f['single_stream_tok_s']:.0f} tok/s"
    return (f"{where}best batch {f['peak_batch']}, limited by {limits[f['peak_limited_by']]} (it holds "
            f"{f['max_batch']} such requests); single stream {f['single_stream_tok_s']:.0f} tok/s")

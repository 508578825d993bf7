"""What-if: one workload on each serving stack's engine profile (vLLM V1 and V0, TensorRT-LLM, SGLang, TGI, Triton,
Ollama), on the same GPU and model.

    python experiments/compare_engines.py [--gpu h100_sxm] [--model llama-3.1-8b] [--rates 5 20 40]
                                          [--requests 2000] [--out results/engines]

Each arm is a Poisson stream of chat-like requests (log-normal prompts, mean 1,000 tokens; outputs mean 200) on one
replica; only ``engine.profile`` changes, so the differences are the stacks' batching policies, defaults and
efficiency sets (``fleetsim catalog engines`` says which are measured and which are assumptions). Prints one row
per (profile, rate) and writes ``engines.csv`` to ``--out``. Every arm uses the same seed, so the same requests.
"""

from __future__ import annotations

import pandas as pd
from common import emit, sweep_parser

import sim
from sim.engine.profiles import engine_profiles


def arm(profile: str, gpu: str, model: str, rate: float, requests: int) -> sim.Scenario:
    return sim.Scenario.model_validate({
        "name": f"engines-{profile}",
        "workload": {"type": "open_loop", "arrival": {"process": "poisson", "rate_per_s": rate},
                     "num_requests": requests,
                     "prompt_tokens": {"dist": "lognormal", "mean": 1000, "cv": 1.0, "max_tokens": 7000},
                     "output_tokens": {"dist": "lognormal", "mean": 200, "cv": 1.0, "max_tokens": 1000}},
        "pools": {"p": {"gpu": gpu, "model": model, "engine": {"profile": profile, "max_model_len": 8192}}},
        "slo": {"ttft_s": 2.0, "tpot_s": 0.1},
    })


def run(gpu: str, model: str, rates: list[float], requests: int) -> pd.DataFrame:
    rows = []
    for profile in engine_profiles():
        for rate in rates:
            s = sim.simulate(arm(profile, gpu, model, rate, requests)).summary
            rows.append({
                "profile": profile, "rate_per_s": rate,
                "ttft_p50_ms": 1e3 * s["ttft_s"]["p50"], "ttft_p99_ms": 1e3 * s["ttft_s"]["p99"],
                "tpot_p50_ms": 1e3 * s["tpot_s"]["p50"], "tpot_p99_ms": 1e3 * s["tpot_s"]["p99"],
                "out_tok_per_s": s["throughput"]["output_tokens_per_s"],
                "preemptions": s["requests"]["preemptions"],
                "slo_pct": 100 * s["slo"]["attainment"],
            })
    return pd.DataFrame(rows)


def main() -> None:
    parser = sweep_parser(__doc__, [5.0, 20.0, 40.0], 2000)
    parser.add_argument("--gpu", default="h100_sxm")
    parser.add_argument("--model", default="llama-3.1-8b")
    args = parser.parse_args()
    emit(run(args.gpu, args.model, args.rates, args.requests), args.out, "engines.csv")


if __name__ == "__main__":
    main()

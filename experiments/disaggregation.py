"""What-if: the same eight H100s co-located or split into prefill and decode pools (Splitwise / DistServe style).

    python experiments/disaggregation.py [--rates 2 4 6] [--requests 3000] [--out results/disaggregation]

Starts from ``configs/disaggregated_h100.yaml`` (Llama-3.1-70B fp8, TP2 replicas, long prompts) and changes only
the split (co-located: four replicas serving both phases; or 1:3, 2:2, 3:1 prefill:decode replicas) and the
arrival rate. Prints one row per (split, rate): TTFT and TPOT percentiles, the KV hand-off time, SLO attainment
and cost; writes ``disaggregation.csv`` to ``--out``. Every arm uses the same seed, so the same requests.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from common import emit, sweep_parser

import sim

SCENARIO = Path(__file__).resolve().parent.parent / "configs" / "disaggregated_h100.yaml"
SPLITS = {"co-located 4": None, "P:D 1:3": (1, 3), "P:D 2:2": (2, 2), "P:D 3:1": (3, 1)}


def arm(split: tuple[int, int] | None, rate: float, requests: int) -> sim.Scenario:
    base = sim.load_scenario(SCENARIO, [f"workload.arrival.rate_per_s={rate}", f"workload.num_requests={requests}"])
    if split is None:  # the same GPUs, every replica serving both phases
        pool = base.pools["prefill"].model_copy(update={"role": "both", "replicas": 4})
        return base.model_copy(update={"pools": {"colocated": pool}, "kv_transfer": None})
    pools = {name: base.pools[name].model_copy(update={"replicas": n})
             for name, n in zip(("prefill", "decode"), split, strict=True)}
    return base.model_copy(update={"pools": pools})


def run(rates: list[float], requests: int) -> pd.DataFrame:
    rows = []
    for name, split in SPLITS.items():
        for rate in rates:
            s = sim.simulate(arm(split, rate, requests)).summary
            kv = s.get("kv_transfer_s") or {}
            rows.append({
                "split": name, "rate_per_s": rate,
                "ttft_p50_ms": 1e3 * s["ttft_s"]["p50"], "ttft_p99_ms": 1e3 * s["ttft_s"]["p99"],
                "tpot_p50_ms": 1e3 * s["tpot_s"]["p50"], "tpot_p99_ms": 1e3 * s["tpot_s"]["p99"],
                "kv_p99_ms": 1e3 * kv["p99"] if kv else float("nan"),
                "slo_pct": 100 * s["slo"]["attainment"],
                "out_tok_per_s": s["throughput"]["output_tokens_per_s"],
                "usd_per_m_out_tokens": s["cost"]["usd_per_million_output_tokens"],
            })
    return pd.DataFrame(rows)


def main() -> None:
    parser = sweep_parser(__doc__, [2.0, 4.0, 6.0], 3000)
    args = parser.parse_args()
    emit(run(args.rates, args.requests), args.out, "disaggregation.csv")


if __name__ == "__main__":
    main()

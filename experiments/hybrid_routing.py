"""What-if: a hybrid L4 + H100 fleet with size-aware routing against an all-H100 fleet, at the same SLO, on the
Azure code trace.

    python experiments/hybrid_routing.py [--attainment 0.95 0.98] [--out results/hybrid]

Starts from ``configs/hybrid_code_l4_h100.yaml`` and searches the replica counts: all-H100 fleets (1-4 H100s, any
request to any replica) and hybrid fleets (0-8 L4s and 1-3 H100s; prompts of at least ``--thresholds`` tokens to the
H100s, the rest to the L4s, L4 bursts overflowing to the H100s). For each attainment target and each kind it prints
the cheapest fleet that meets it, and what the hybrid saves; every fleet tried goes to ``hybrid.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from common import emit

import sim

SCENARIO = Path(__file__).resolve().parent.parent / "configs" / "hybrid_code_l4_h100.yaml"


def run_fleet(l4: int, h100: int, threshold: int | None) -> dict:
    base = sim.load_scenario(SCENARIO, [f"pools.l4.replicas={l4}", f"pools.h100.replicas={h100}"])
    router = base.router
    if threshold is None:  # all-H100: no rules
        router = router.model_copy(update={"rules": (), "overflow": ()})
    else:
        first = router.rules[0].model_copy(update={"min_prompt_tokens": threshold})
        router = router.model_copy(update={"rules": (first, *router.rules[1:])})
    s = sim.simulate(base.model_copy(update={"router": router})).summary
    return {"kind": "all-H100" if threshold is None else "hybrid", "l4": l4, "h100": h100,
            "threshold": threshold, "usd_per_hour": s["cost"]["usd_per_hour"], "slo_pct": 100 * s["slo"]["attainment"],
            "ttft_p99_ms": 1e3 * s["ttft_s"]["p99"], "tpot_p99_ms": 1e3 * s["tpot_s"]["p99"]}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attainment", type=float, nargs="+", default=[0.95, 0.98])
    parser.add_argument("--thresholds", type=int, nargs="+", default=[2000, 3000, 4500])
    parser.add_argument("--max-l4", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [run_fleet(0, n, None) for n in range(1, 5)]
    rows += [run_fleet(l4, h100, t) for t in args.thresholds for h100 in range(1, 4)
             for l4 in range(0, args.max_l4 + 1)]
    table = pd.DataFrame(rows)
    bests = []
    for target in args.attainment:
        ok = table[table["slo_pct"] >= 100 * target]
        best = ok.loc[ok.groupby("kind")["usd_per_hour"].idxmin()].sort_values("kind").assign(target_pct=100 * target)
        bests.append(best)
        if set(best["kind"]) == {"all-H100", "hybrid"}:
            h, a = best.set_index("kind").loc["hybrid"], best.set_index("kind").loc["all-H100"]
            saving = 100 * (1 - h["usd_per_hour"] / a["usd_per_hour"])
            print(f"at >= {100 * target:g}% SLO the hybrid saves {saving:.1f}% "
                  f"(${a['usd_per_hour']:.2f}/h -> ${h['usd_per_hour']:.2f}/h)")
        else:
            print(f"at >= {100 * target:g}% SLO no fleet of kind {sorted({'all-H100', 'hybrid'} - set(best['kind']))} "
                  "met it")
    emit(pd.concat(bests), args.out, "best.csv")
    if args.out is not None:
        table.to_csv(args.out / "hybrid.csv", index=False)


if __name__ == "__main__":
    main()

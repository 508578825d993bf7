"""How many requests/s one replica of a pool serves within the scenario's SLO: the ``capacity_rps`` that predictive
and fleet autoscalers need, measured with the simulator itself.

    python experiments/replica_capacity.py configs/diurnal_burst_to_h100.yaml --pool h100 --attainment 0.95

Takes the scenario's pool and lengths (prompt and output distributions of an open-loop workload; for a trace, its
lengths), runs one replica of the pool alone under Poisson arrivals at a trial rate, and bisects on the rate for
the highest one whose SLO attainment is at least ``--attainment``. Prints the rate and the run's figures.
"""

from __future__ import annotations

import argparse

import sim
from sim.config import OpenLoopWorkload
from sim.scenario import validate_scenario


def attainment_at(scenario, pool: str, rate: float, requests: int, seed: int) -> dict:
    wl = scenario.workload
    if not isinstance(wl, OpenLoopWorkload):
        raise SystemExit("replica_capacity needs an open-loop workload (its prompt and output lengths are used)")
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    one = {**data["pools"][pool], "replicas": 1}
    for key in ("autoscale", "spot", "failures"):
        one.pop(key, None)
    data.update(pools={pool: one}, workload={**data["workload"], "num_requests": requests,
                                             "arrival": {"process": "poisson", "rate_per_s": rate}})
    data["workload"].pop("duration_s", None)
    data.pop("fleet_autoscale", None)
    s = sim.simulate(validate_scenario(data, "replica_capacity"), seed).summary
    return {"rate": rate, "attainment": s["slo"]["attainment"] or 0.0, "ttft_p99_s": s["ttft_s"]["p99"],
            "tpot_p50_s": s["tpot_s"]["p50"]}


def capacity(scenario, pool: str, target: float, requests: int = 1500, seed: int = 0, hi: float = 64.0,
             steps: int = 10) -> tuple[float, dict]:
    """The highest Poisson rate (bisected to ``hi / 2**steps``) at which one replica meets ``target`` attainment."""
    if not scenario.slo.model_dump(exclude_none=True):
        raise SystemExit("the scenario has no slo: give ttft_s, tpot_s or e2e_s targets")
    lo, best = 0.0, None
    while attainment_at(scenario, pool, hi, requests, seed)["attainment"] >= target:
        lo, hi = hi, 2 * hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        run = attainment_at(scenario, pool, mid, requests, seed)
        if run["attainment"] >= target:
            lo, best = mid, run
        else:
            hi = mid
    return lo, best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--pool", required=True)
    ap.add_argument("--attainment", type=float, default=0.95)
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sc = sim.load_scenario(args.scenario)
    if args.pool not in sc.pools:
        raise SystemExit(f"no pool {args.pool!r} in {args.scenario}; pools: {', '.join(sc.pools)}")
    rate, run = capacity(sc, args.pool, args.attainment, args.requests, args.seed)
    print(f"{args.pool}: {rate:.3g} requests/s per replica at >= {args.attainment:.0%} SLO attainment "
          f"({args.requests} requests, seed {args.seed})")
    if run:
        print(f"  at that rate: attainment {run['attainment']:.3f}, TTFT p99 {run['ttft_p99_s']:.3f} s, "
              f"TPOT p50 {run['tpot_p50_s'] * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

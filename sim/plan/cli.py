"""``fleetsim plan``: the command line of :mod:`sim.plan`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sim.outpaths import out_folder
from sim.plan import adjust, first_cut, load_plan, write_plan


def add_parser(sub) -> None:
    pl = sub.add_parser("plan", help="the cheapest GPU mix that meets the SLOs for a workload")
    pl.add_argument("plan", help="planning YAML file (scenario, candidates, target_attainment)")
    pl.add_argument("--out", default=None, help="folder for plan.yaml (default: results/<plan name>)")
    pl.set_defaults(func=cmd_plan)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} x {name}" for name, n in counts.items() if n) or "nothing"


def cmd_plan(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    planner = load_plan(args.plan)
    cfg = planner.config
    out = out_folder(args.out or Path("results") / cfg.name, "--out")
    slo = planner.base.slo.model_dump(exclude_none=True)
    print(f"plan {cfg.name!r}: {planner.rate_rps:.3g} req/s, mean prompt {planner.mean_prompt:,.0f} and output "
          f"{planner.mean_output:,.0f} tokens; SLO {slo} for {100 * cfg.target_attainment:g}% of requests\n")
    print(f"{'candidate':<22}{'$/h':>8}{'req/s':>9}{'batch':>7}{'TPOT ms':>9}  limited by   $/M out tokens")
    for c in planner.candidates:
        cap = c.capacity
        per_m = c.usd_per_hour / (cap.rate_rps * planner.mean_output * 3600) * 1e6 if cap.rate_rps else float("nan")
        print(f"{c.name:<22}{c.usd_per_hour:>8.2f}{cap.rate_rps:>9.3g}{cap.batch:>7d}{1e3 * cap.tpot_s:>9.1f}  "
              f"{cap.limited_by:<12} {per_m:>8.3f}")
    counts = first_cut(planner)
    print(f"\nfirst cut (integer program, {100 * cfg.headroom:g}% load): {_counts(counts)}, "
          f"${planner.cost(counts):,.2f}/h")
    final, summary, history = adjust(planner, counts)
    print("\nsimulated:")
    for h in history:
        print(f"  {_counts(h['counts']):<40} ${h['usd_per_hour']:>8.2f}/h  attainment {100 * h['attainment']:6.2f}%  "
              f"TTFT p99 {h['ttft_p99_s'] if h['ttft_p99_s'] is not None else float('nan'):.3g} s  "
              f"TPOT p99 {h['tpot_p99_s'] if h['tpot_p99_s'] is not None else float('nan'):.3g} s")
    att = summary["slo"]["attainment"] or 0.0
    met = att >= cfg.target_attainment
    cost = summary["cost"]
    def fmt(value, spec: str = ".3g") -> str:
        return "-" if value is None else format(value, spec)

    print(f"\nplan: {_counts(final)}: ${planner.cost(final):,.2f}/h, "
          f"${fmt(cost['usd_per_million_output_tokens'], ',.3f')} per million output tokens; "
          f"TTFT p50/p99 {fmt(summary['ttft_s']['p50'])}/{fmt(summary['ttft_s']['p99'])} s, "
          f"TPOT p50/p99 {fmt(summary['tpot_s']['p50'])}/{fmt(summary['tpot_s']['p99'])} s, "
          f"attainment {100 * att:.2f}% ({'meets' if met else 'MISSES'} the target)")
    print(f"scenario: {write_plan(planner, final, out)} ({time.perf_counter() - start:.1f} s)")
    return 0 if met else 1

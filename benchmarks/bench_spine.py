"""Simulation speed of the shipped scenarios: simulated requests per wall-second, engine steps per second.

    python benchmarks/bench_spine.py [--repeat 5] [--stepping fast,iteration]

Prints the median (and min/max) over repeats of each scenario's wall time (build + run + results), with
``tracemalloc``'s peak of Python allocations in one extra run, for each stepping mode asked for (every pool's
``engine.stepping``), and the fast/iteration speed-up when both are. Machines are shared and noisy: quote
medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from pathlib import Path

import sim

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "quickstart (2,000 req, Poisson, 3 replicas)": ("configs/quickstart.yaml", []),
    "azure conv replay (19,366 req, 4 replicas)": ("configs/azure_conv_mixed_fleet.yaml", []),
    "closed loop (640 req, 16 clients, 1 H100)": ("configs/closed_loop_benchmark.yaml", []),
}


def once(path: Path, overrides: list[str], stepping: str) -> tuple[float, int]:
    sc = sim.load_scenario(path, overrides)
    sc = sc.model_copy(update={"pools": {name: pool.model_copy(update={
        "engine": pool.engine.model_copy(update={"stepping": stepping})}) for name, pool in sc.pools.items()}})
    start = time.perf_counter()
    res = sim.simulate(sc, seed=0)
    return time.perf_counter() - start, len(res.requests)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--stepping", default="fast", help="comma-separated: fast, iteration")
    args = ap.parse_args()
    modes = args.stepping.split(",")
    print(f"{'scenario':48} {'stepping':>9} {'median s':>9} {'min-max s':>13} {'req/wall-s':>11} {'peak MiB':>9}")
    for name, (rel, overrides) in SCENARIOS.items():
        path = ROOT / rel
        medians = {}
        for mode in modes:
            walls = []
            for _ in range(args.repeat):
                wall, n = once(path, overrides, mode)
                walls.append(wall)
            tracemalloc.start()
            once(path, overrides, mode)
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            med = medians[mode] = statistics.median(walls)
            print(f"{name:48} {mode:>9} {med:9.2f} {min(walls):6.2f}-{max(walls):<6.2f} {n / med:11,.0f} "
                  f"{peak:9.1f}", flush=True)
        if {"fast", "iteration"} <= set(medians):
            print(f"{'':48} {'speed-up':>9} {medians['iteration'] / medians['fast']:9.1f}x")


if __name__ == "__main__":
    main()

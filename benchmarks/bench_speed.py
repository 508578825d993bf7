"""Simulation speed at scale (issue #4): simulated requests per wall-second, SimPy events per second and peak
memory, each scenario in a fresh process.

    python benchmarks/bench_speed.py                      # every scenario, 3 runs each
    python benchmarks/bench_speed.py --only a1,a2 --repeat 5
    python benchmarks/bench_speed.py --only c --requests 100000   # a smaller (c) for a quick look

Scenarios (files in benchmarks/scenarios/):

- a1, a2: the Vidur-equivalent runs (CodeLlama-34B TP2 on A100 80GB, vLLM scheduler, batch cap 128, 4096-token
  budget): Azure conv lengths at Poisson 2.5 req/s, 10,000 requests; fixed 512/128 at 6 req/s, 50,000 requests.
- b: one Llama-3.1-8B H100 replica at high load (17 req/s of chat-like traffic), 50,000 requests.
- c: 100 such replicas behind power-of-two routing, 1,200 req/s, 1,000,000 requests.
- cs: (c) with its records spilled to Parquet parts past 100,000, as (d) spills its own: d / cs compares like with
  like (c holds its million records in memory, d writes ten million to disk).
- d: the same with 10,000,000 requests (records spill to Parquet parts past 1,000,000).
- e: a day of traffic (issue #10): 10,000,000 requests over 24 simulated hours on a daily cycle, an HPA-scaled H100
  pool (6 to 20 replicas, cold starts) with GPU failures; ``--requests`` does not apply (it ends at 24 h).

Each figure is the median over ``--repeat`` runs. ``--in-process N`` runs each scenario N times in each process:
``wall s`` stays the first (fresh) run's, and ``warm s`` is the median of the later ones (a sweep's worker or a
notebook, which keep each GPU's kernel model and pandas warm). ``wall s`` times :func:`sim.simulate` only (build, run,
results); ``start s`` is the process's time before it (imports, scenario load). ``events/s`` counts SimPy's events
on the Python engine and the compiled core's (arrivals, wake-ups, step ends) where it runs (the summary's
``engine.core``; ``--core python`` forces the Python engine). ``peak MiB`` is the process's
maximum resident set size (``getrusage``). The machines here are shared and noisy: quote medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "scenarios"
SCENARIOS = {
    "a1": ("Vidur-equivalent, Azure conv lengths, 10k req", HERE / "vidur_conv.yaml", []),
    "a2": ("Vidur-equivalent, 512/128 fixed, 50k req", HERE / "vidur_fixed.yaml", []),
    "b": ("one H100 replica at high load, 50k req", HERE / "one_replica_high_load.yaml", []),
    "c": ("100 replicas, 1M req", HERE / "fleet_100.yaml", []),
    "cs": ("(c) with its records spilled past 100k", HERE / "fleet_100.yaml", ["run.spill_after_requests=100000"]),
    "d": ("100 replicas, 10M req", HERE / "fleet_100.yaml", ["workload.num_requests=10000000"]),
    "e": ("24 h, 10M req, autoscaled, failures", HERE / "day_10m.yaml", []),
}


def one(name: str, requests: int | None, core: str = "auto", times: int = 1) -> dict:
    """Run one scenario in this process (``times`` times: the first is the fresh process's run, the later ones
    warm, as in a sweep's worker) and return its figures."""
    started = time.perf_counter()
    import sim

    _, path, overrides = SCENARIOS[name]
    overrides = [*overrides, *([f"workload.num_requests={requests}"] if requests and name != "e" else []),
                 f"run.core={core}"]
    scenario = sim.load_scenario(path, overrides)
    start_s = time.perf_counter() - started
    walls = []
    for _ in range(times):
        with tempfile.TemporaryDirectory() as spill:
            t0 = time.perf_counter()
            res = sim.simulate(scenario, spill_dir=spill)
            walls.append(time.perf_counter() - t0)
        engine = res.summary["engine"]
        n = res.summary["requests"]["arrived"]
        counts = {k: res.summary["requests"][k] for k in ("arrived", "finished", "rejected", "in_flight", "restarts")}
        simulated_s = res.summary["duration_s"]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"requests": n, "wall_s": walls[0], "warm_s": statistics.median(walls[1:]) if times > 1 else None,
            "start_s": start_s, "steps": engine["steps"],
            "events": engine["simpy_events"] if engine["core"] == "python" else engine["core_events"],
            "core": engine["core"], "spilled": engine["records_spilled_to"] is not None,
            "peak_mib": peak_kib / 1024, "counts": counts, "simulated_h": simulated_s / 3600}


def _seconds(s: float) -> str:
    return f"{s:8.3f}" if s < 10 else f"{s:8.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenario names")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, help="override the number of requests (quick looks)")
    ap.add_argument("--core", choices=["auto", "python"], default="auto", help="run.core (python: the SimPy engine)")
    ap.add_argument("--in-process", type=int, default=1, metavar="N",
                    help="run each scenario N times in each process; 'warm s' is the median of the later runs")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.in_process < 1:
        ap.error("--in-process: give 1 or more")
    if args.one:
        print(json.dumps(one(args.one, args.requests, args.core, args.in_process)))
        return
    warm = args.in_process > 1
    print(f"{'':3} {'scenario':46} {'requests':>10} {'wall s':>8} {'start s':>7} {'req/wall-s':>10} "
          f"{'events/s':>10} {'steps/s':>10} {'peak MiB':>8}" + (f" {'warm s':>8} {'warm req/s':>10}" if warm else ""))
    for name in args.only.split(","):
        runs = []
        for _ in range(args.repeat):
            cmd = [sys.executable, __file__, "--one", name, "--core", args.core, "--in-process",
                   str(args.in_process)] + (["--requests", str(args.requests)] if args.requests else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        wall = statistics.median(r["wall_s"] for r in runs)
        start = statistics.median(r["start_s"] for r in runs)
        n = runs[0]["requests"]
        events = runs[0]["events"]
        warm_s = statistics.median(r["warm_s"] for r in runs) if warm else None
        print(f"{name:3} {SCENARIOS[name][0]:46} {n:10,d} {_seconds(wall)} {start:7.2f} {n / wall:10,.0f} "
              f"{(events or 0) / wall:10,.0f} {runs[0]['steps'] / wall:10,.0f} "
              f"{max(r['peak_mib'] for r in runs):8.0f}"
              + (f" {_seconds(warm_s)} {n / warm_s:10,.0f}" if warm else ""), flush=True)
        simulated_h = runs[0]["simulated_h"]
        print(f"{'':3} {runs[0]['core']} core; {simulated_h * 3600:,.0f} simulated seconds ({simulated_h:.2f} h); "
              "requests: "
              + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in runs[0]["counts"].items()), flush=True)


if __name__ == "__main__":
    main()

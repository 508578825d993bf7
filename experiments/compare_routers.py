"""Compare routers on one scenario under common random numbers, with replications.

    python experiments/compare_routers.py configs/quickstart.yaml --replications 5 --out results/compare_routers

Each replication's seed is a child of one SeedSequence; every router sees the same arrivals and lengths in a
given replication (the streams are split by name), so the arms differ only by the policy. Writes
``summary.csv`` (one row per router x replication x metric) and prints the mean and a 95% interval.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import sim
from sim.cluster.router import ROUTERS

METRICS = {"ttft_p99_s": ("ttft_s", "p99"), "tpot_p50_s": ("tpot_s", "p50"), "e2e_mean_s": ("e2e_s", "mean")}


def run(scenario_path: str, replications: int, overrides: list[str], base_seed: int = 0) -> pd.DataFrame:
    rows = []
    seeds = np.random.SeedSequence(base_seed).spawn(replications)
    for policy in sorted(ROUTERS):
        sc = sim.load_scenario(scenario_path, [*overrides, f"router.policy={policy}"])
        for rep, seed in enumerate(seeds):
            s = sim.simulate(sc, seed=seed).summary
            for name, (metric, stat) in METRICS.items():
                rows.append((policy, rep, name, s[metric][stat]))
            rows.append((policy, rep, "slo_attainment", s["slo"]["attainment"]))
    return pd.DataFrame(rows, columns=["router", "replication", "metric", "value"])


def interval(values: pd.Series) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) < 2:
        return f"{v.mean():.4g}"
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.4g} ± {half:.2g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--replications", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="results/compare_routers")
    args = ap.parse_args()
    frame = run(args.scenario, args.replications, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "summary.csv", index=False)
    table = frame.groupby(["router", "metric"])["value"].apply(interval).unstack("metric")
    print(table.to_string())
    print(f"\nwritten {out / 'summary.csv'}")


if __name__ == "__main__":
    main()

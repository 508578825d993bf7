"""What-if: one L4 shared by 1, 2 and 4 vGPU VMs, each serving Llama-3.2-1B, under growing load per VM.

    python experiments/vgpu_consolidation.py --out results/vgpu_consolidation

Starts from ``configs/l4_vgpu_consolidation.yaml`` and changes only the profile (L4-24C, L4-12C, L4-6C), the
number of VMs and the arrival rate (``rate per VM x VMs``: each VM is a tenant with its own traffic). Prints one
row per (VMs, load): throughput per VM, mean and p99 latencies, the GPU's busy fraction, SLO attainment and
cost, and writes ``consolidation.csv`` and ``consolidation.png`` to ``--out``. Every arm uses the same seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

import sim

SCENARIO = Path(__file__).resolve().parent.parent / "configs" / "l4_vgpu_consolidation.yaml"
PROFILES = {1: "L4-24C", 2: "L4-12C", 4: "L4-6C"}


def run(rates_per_vm: list[float], requests_per_vm: int, scheduler: str, fidelity: str) -> pd.DataFrame:
    rows = []
    for vms, profile in PROFILES.items():
        for rate in rates_per_vm:
            sc = sim.load_scenario(SCENARIO, [
                f"pools.vms.replicas={vms}", f"pools.vms.sharing.profile={profile}",
                f"pools.vms.sharing.scheduler={scheduler}", f"pools.vms.sharing.fidelity={fidelity}",
                f"workload.arrival.rate_per_s={rate * vms}", f"workload.num_requests={requests_per_vm * vms}"])
            res = sim.simulate(sc)
            s = res.summary
            rows.append({
                "vms": vms, "profile": profile, "rate_per_vm": rate,
                "req_per_s_per_vm": s["throughput"]["requests_per_s"] / vms,
                "out_tok_per_s_per_vm": s["throughput"]["output_tokens_per_s"] / vms,
                "ttft_mean_s": s["ttft_s"]["mean"], "ttft_p99_s": s["ttft_s"]["p99"],
                "tpot_mean_s": s["tpot_s"]["mean"], "tpot_p99_s": s["tpot_s"]["p99"],
                "e2e_mean_s": s["e2e_s"]["mean"], "e2e_p99_s": s["e2e_s"]["p99"],
                "gpu_busy": s["shared_gpus"]["busy_fraction_mean"],
                "gpu_time_share_per_vm": s["pools"]["vms"]["gpu"]["gpu_time_share"] / vms,
                "preemptions": s["requests"]["preemptions"],
                "slo_attainment": s["slo"]["attainment"],
                "usd_per_hour": s["cost"]["usd_per_hour"],
                "usd_per_m_out_tokens": s["cost"]["usd_per_million_output_tokens"],
            })
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    panels = [("req_per_s_per_vm", "throughput per VM (req/s)"), ("ttft_p99_s", "TTFT p99 (s)"),
              ("tpot_mean_s", "TPOT mean (s)"), ("gpu_busy", "GPU busy fraction")]
    for ax, (column, label) in zip(axes, panels, strict=True):
        for vms, rows in table.groupby("vms"):
            ax.plot(rows["rate_per_vm"], rows[column], marker="o", label=f"{vms} VM ({PROFILES[vms]})")
        ax.set_xlabel("offered load per VM (req/s)")
        ax.set_ylabel(label)
        if column.startswith("ttft"):
            ax.set_yscale("log")
    axes[0].legend()
    fig.suptitle("One L4, Llama-3.2-1B per VM, vGPU best effort")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="0.5,1,2,3,4,6", help="offered requests/s per VM, comma-separated")
    ap.add_argument("--requests-per-vm", type=int, default=600)
    ap.add_argument("--scheduler", default="best_effort", choices=["best_effort", "equal_share", "fixed_share"])
    ap.add_argument("--fidelity", default="fluid", choices=["fluid", "quantum"])
    ap.add_argument("--out", help="folder for consolidation.csv and consolidation.png")
    args = ap.parse_args(argv)
    table = run([float(r) for r in args.rates.split(",")], args.requests_per_vm, args.scheduler, args.fidelity)
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.float_format", "{:.3g}".format):
        print(table.to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "consolidation.csv", index=False)
        plot(table, out / "consolidation.png")
        print(f"written to {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

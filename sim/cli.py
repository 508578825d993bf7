"""The ``fleetsim`` command: the only place that prints and writes files.

Exit status: 0 on success, 2 on bad input (one line on stderr naming the file and field or line), 1 on an
internal error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import yaml

from sim.catalog import load_catalog
from sim.cluster.deploy import plan_pools
from sim.errors import FleetsimError
from sim.results import Results
from sim.scenario import load_scenario
from sim.simulate import simulate


def _fmt(value, scale: float = 1.0, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:,.{digits}f}"


def summary_text(res: Results) -> str:
    """The table ``fleetsim run`` prints: per pool and overall."""
    s = res.summary
    head = ["pool", "done", "rej", "TTFT p50/p90/p99 ms", "TPOT p50/p90/p99 ms", "E2E p50/p99 s", "out tok/s",
            "SLO %", "$/h"]
    rows = []
    for name, b in [*s["pools"].items(), ("all", s)]:
        rows.append([
            name,
            str(b["requests"]["finished"]),
            str(b["requests"]["rejected"]),
            "/".join(_fmt(b["ttft_s"][q], 1e3, 0) for q in ("p50", "p90", "p99")),
            "/".join(_fmt(b["tpot_s"][q], 1e3, 1) for q in ("p50", "p90", "p99")),
            "/".join(_fmt(b["e2e_s"][q], 1, 1) for q in ("p50", "p99")),
            _fmt(b["throughput"]["output_tokens_per_s"], 1, 0),
            _fmt(b["slo"]["attainment"], 100, 1),
            _fmt(b["cost"]["usd_per_hour"], 1, 2),
        ])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded)

    req = s["requests"]
    cost = s["cost"]
    out = [
        f"scenario {s['scenario']!r}, seed {s['seed']}: {s['duration_s']:,.1f} s simulated",
        f"requests: {req['arrived']} arrived, {req['finished']} finished, {req['rejected']} rejected, "
        f"{req['in_flight']} in flight, {req['preemptions']} preemptions",
        "",
        line(head),
        line(["-" * w for w in widths]),
        *[line(r) for r in rows],
        "",
        f"cost: ${cost['usd_total']:,.4f} total, ${_fmt(cost['usd_per_hour'], 1, 2)}/h, "
        f"${_fmt(cost['usd_per_million_output_tokens'], 1, 3)} per million output tokens; "
        f"energy {s['energy_kwh']:.4f} kWh",
    ]
    targets = s["slo"]["targets"]
    if targets:
        out.append("SLO: " + ", ".join(f"{k} <= {v:g}" for k, v in targets.items()))
    return "\n".join(out)


def write_results(res: Results, out: Path) -> list[Path]:
    """Write the run's data for notebooks: Parquet tables, summary.json and the resolved scenario."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "requests.parquet": res.requests,
        "timeseries.parquet": res.timeseries,
        "cost_by_hour.parquet": res.cost_by_hour,
        "replicas.parquet": res.replicas,
    }
    written = []
    for name, frame in files.items():
        frame.to_parquet(out / name, index=False)
        written.append(out / name)
    (out / "summary.json").write_text(json.dumps(res.summary, indent=2) + "\n", encoding="utf-8")
    (out / "scenario.yaml").write_text(
        yaml.safe_dump(res.scenario.model_dump(mode="json", by_alias=True), sort_keys=False), encoding="utf-8")
    written += [out / "summary.json", out / "scenario.yaml"]
    return written


class _Bar:
    """A tqdm bar that appears only if the run lasts more than two seconds."""

    def __init__(self, quiet: bool) -> None:
        self.bar = None
        self.quiet = quiet

    def __call__(self, now_s: float, done: int, expected: int | None) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=expected, unit="req", delay=2.0, file=sys.stderr, dynamic_ncols=True)
        self.bar.set_postfix_str(f"t={now_s:,.0f}s", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, args.set or ())
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise FleetsimError(f"--out {args.out}: exists and is not a folder")
    bar = _Bar(args.quiet)
    started = time.perf_counter()
    try:
        res = simulate(scenario, seed=args.seed, progress=bar)
    finally:
        bar.close()
    wall = time.perf_counter() - started
    print(summary_text(res))
    print(f"wall time {wall:.2f} s")
    if args.out:
        try:
            write_results(res, Path(args.out))
        except OSError as err:
            raise FleetsimError(f"--out {args.out}: cannot write results: {err.strerror or err}") from None
        print(f"results written to {args.out}/")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, args.set or ())
    print(yaml.safe_dump(scenario.model_dump(mode="json", by_alias=True), sort_keys=False), end="")
    plans = plan_pools(scenario, load_catalog(tuple(Path(p) for p in scenario.catalog_files)), args.scenario)
    print("# deployment")
    for name, p in plans.items():
        z = p.sizing
        print(f"#   {name}: {p.config.replicas} x ({p.config.tensor_parallel} x {p.gpu.name}), {p.model.name} "
              f"{p.config.precision} (compute {z.compute_dtype}, KV {z.kv_dtype}); weights "
              f"{z.weight_bytes_per_gpu / 2**30:.1f} GiB/GPU, activations {z.activation_bytes_per_gpu / 2**30:.1f} "
              f"GiB/GPU, KV cache {z.kv_blocks} blocks = {z.kv_tokens} tokens, max_model_len {z.max_model_len}; "
              f"${p.usd_per_gpu_hour:.3f}/GPU-h ({p.price_label})")
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    import pandas as pd

    catalog = load_catalog(tuple(Path(p) for p in args.file or ()))
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    if args.what == "gpus":
        frame = pd.DataFrame([g.model_dump(exclude={"sources"}) for g in catalog.gpus.values()]).set_index("key")
    elif args.what == "models":
        frame = pd.DataFrame([{**m.model_dump(exclude={"source"}), "params_b": m.n_params / 1e9}
                              for m in catalog.models.values()]).set_index("key")
    else:
        frame = pd.DataFrame([{**p.model_dump(exclude={"source"}), "usd_per_gpu_hour": p.usd_per_gpu_hour}
                              for p in catalog.prices])
    print(frame.to_string())
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fleetsim", description="Simulate LLM inference fleets: latency and cost.")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulate a scenario and print its summary")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. pools.l4.replicas=3")
    run.add_argument("--out", help="folder for requests.parquet, timeseries.parquet, cost_by_hour.parquet, ...")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a scenario and print it resolved, or the first error")
    val.add_argument("scenario")
    val.add_argument("--set", action="append", metavar="KEY=VALUE")
    val.set_defaults(func=cmd_validate)

    cat = sub.add_parser("catalog", help="list the GPUs, models or prices in the catalog")
    cat.add_argument("what", choices=["gpus", "models", "prices"])
    cat.add_argument("--file", action="append", help="an extra catalog YAML to include")
    cat.set_defaults(func=cmd_catalog)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "seed", None) is not None and args.seed < 0:
        parser().error("--seed must be a non-negative integer")
    try:
        return args.func(args)
    except FleetsimError as err:
        print(f"fleetsim: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fleetsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

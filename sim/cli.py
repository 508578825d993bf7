"""The ``fleetsim`` command: the only place that prints and writes files.

Exit status: 0 on success, 2 on bad input (one line on stderr naming the file and field or line), 1 on an
internal error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from sim.catalog import load_catalog
from sim.cluster.deploy import plan_pools
from sim.errors import CatalogError, FleetsimError, InternalError, unknown_name
from sim.metrics.store import clear_parts, write_parquet
from sim.outpaths import out_file, out_folder
from sim.results import Results
from sim.scenario import load_scenario
from sim.simulate import simulate


def _fmt(value, scale: float = 1.0, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:,.{digits}f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
    if req["in_flight"] and not s.get("stalled"):
        # A clock limit that cuts a busy run: the figures above judge the requests that finished, a biased sample.
        out.append(f"note: {req['in_flight']} requests ({100 * req['in_flight'] / max(req['arrived'], 1):.1f}% of "
                   f"arrivals) were still in flight at the clock limit ({s['duration_s']:,.1f} s); latency, "
                   "throughput and SLO figures judge only the finished and rejected ones")
    if s.get("stalled"):
        st = s["stalled"]
        out.append(f"WARNING: the run stalled at {st['at_s']:,.1f} s: {st['waiting']} requests left in flight "
                   f"({st['reason']})")
    hours = s["gpu_hours"]
    if hours["cold_start"] or hours["draining"]:
        billed = hours["billed"] or 1.0
        out.append(f"GPU-hours: {hours['billed']:,.3f} billed; wasted in cold start {hours['cold_start']:,.3f} "
                   f"({100 * hours['cold_start'] / billed:.1f}%), draining {hours['draining']:,.3f}, idle "
                   f"{hours['idle']:,.3f}; {req['interrupted']} requests restarted after their replica went away")
    shared = s.get("shared_gpus")
    if shared:
        out.append(f"shared GPUs: {shared['physical_gpus']}, busy {_fmt(shared['busy_fraction_mean'], 100, 1)}% "
                   f"on average (max {_fmt(shared['busy_fraction_max'], 100, 1)}%), {shared['switch_s']:.3f} s "
                   f"switching, vGPU licences ${shared['licence_usd_total']:,.4f}")
    util = s.get("utilisation") or {}
    if util.get("utilisation") is not None and util.get("usd_per_request") is not None:
        idle = {k: v for k, v in util["usd"].items() if k != "busy" and v > 0}
        out.append(f"utilisation: {100 * util['utilisation']:.1f}% of billed GPU time busy; "
                   f"${util['usd_per_request']:.6f} per request (${util['usd_per_request_if_fully_used']:.6f} at full "
                   "use)" + (
                       "; not busy: " + ", ".join(f"{k} ${v:,.4f}" for k, v in idle.items()) if idle else ""))
    m = s.get("maintenance")
    if m:
        out.append(f"maintenance: {_count(m['windows'], 'window')}; {_count(m['replicas_down'], 'replica')} down, "
                   f"{m['replicas_migrated']} live-migrated ({m['stun_s']:.2f} s of stun); "
                   f"{_count(m['requests_requeued'], 'request')} re-queued, {m['requests_delayed']} delayed; "
                   f"{m['capacity_lost_replica_s']:,.0f} replica-seconds lost")
    alerts = s.get("alerts")
    if alerts:
        out.append("alerts: " + "; ".join(f"{name} fired {a['fired']}x ({a['firing_s']:,.0f} s)" if a["fired"]
                                          else f"{name} quiet" for name, a in alerts.items()))
    kv = s.get("kv_transfer_s")
    if kv:
        out.append(f"KV hand-off (prefill -> decode): {_fmt(kv['p50'], 1e3, 1)} ms median, {_fmt(kv['p99'], 1e3, 1)} "
                   "ms p99, link waits included")
    targets = s["slo"]["targets"]
    if targets:
        out.append("SLO: " + slo_text(targets))
    return "\n".join(out)


def slo_text(targets: dict) -> str:
    """The SLO targets of a summary as text: ``ttft_s <= 2, tpot_s <= 0.1``, or per traffic class."""
    if targets and all(isinstance(v, dict) for v in targets.values()):  # one SLO per class
        return "; ".join(f"{cls}: {slo_text(t) or 'none'}" for cls, t in targets.items())
    return ", ".join(f"{k} <= {v:g}" for k, v in targets.items())


def write_results(res: Results, out: str | Path) -> list[Path]:
    """Write the run's data for notebooks: Parquet tables, summary.json and the resolved scenario.

    A run that spilled its records has them as Parquet datasets ``requests/`` and ``timeseries/`` (folders of
    part files, read whole by ``pandas.read_parquet(folder)``) instead of single files.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"cost_by_hour.parquet": res.cost_by_hour, "replicas.parquet": res.replicas}
    for name in ("gpus", "nodes", "lifecycle", "scaling", "monitoring", "alerts", "maintenance"):
        frame = getattr(res, name)
        # An empty alerts or maintenance table is news too (nothing fired, nothing happened).
        if frame is not None and (len(frame) or name in ("monitoring", "alerts", "maintenance")):
            files[f"{name}.parquet"] = frame
    written = []
    for name, frame in (("requests", res.requests_in_memory), ("timeseries", res.timeseries_in_memory)):
        if frame is not None:
            files[f"{name}.parquet"] = frame
            continue
        parts = res.parts(name)
        folder = out / name
        folder.mkdir(exist_ok=True)
        if parts and parts[0].parent.resolve() != folder.resolve():  # an earlier run's parts would join these
            clear_parts(folder)
        for part in parts:
            if part.parent.resolve() != folder.resolve():
                shutil.copyfile(part, folder / part.name)
            written.append(folder / part.name)
    for name, frame in files.items():
        write_parquet(frame, out / name)
        written.append(out / name)
    _remove_stale(out, {p.name for p in written} | {p.parent.name for p in written if p.parent != out})
    (out / "summary.json").write_text(json.dumps(res.summary, indent=2) + "\n", encoding="utf-8")
    (out / "scenario.yaml").write_text(
        yaml.safe_dump(res.scenario.model_dump(mode="json", by_alias=True), sort_keys=False), encoding="utf-8")
    written += [out / "summary.json", out / "scenario.yaml"]
    return written


#: Every file and folder :func:`write_results` may write: one of these left by an earlier run into the same folder,
#: and not written by this one, is removed (a report would read it as this run's).
RESULT_NAMES = ("requests.parquet", "requests", "timeseries.parquet", "timeseries", "cost_by_hour.parquet",
                "replicas.parquet", "gpus.parquet", "nodes.parquet", "lifecycle.parquet", "scaling.parquet",
                "monitoring.parquet", "alerts.parquet", "maintenance.parquet")


def _remove_stale(out: Path, written: set[str]) -> None:
    for name in RESULT_NAMES:
        path = out / name
        if name in written or not path.exists():
            continue
        if path.is_dir():  # a spilled run's parts, and the folder if nothing else is in it
            clear_parts(path)
            if not any(path.iterdir()):
                path.rmdir()
        else:
            path.unlink()


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
    if args.out:
        written = Path(args.out) / "scenario.yaml"
        if written.exists() and written.resolve() == Path(args.scenario).resolve():
            raise FleetsimError(f"--out {args.out}: the run writes its resolved scenario to {written}, the file being "
                                "run, which would lose what only it holds (comments, unset defaults); give another "
                                "--out folder")
        out_folder(args.out, "--out")
    bar = _Bar(args.quiet)
    started = time.perf_counter()
    try:
        res = simulate(scenario, seed=args.seed, progress=bar, spill_dir=Path(args.out) if args.out else None)
    finally:
        bar.close()
    wall = time.perf_counter() - started
    if args.out:  # written before anything is printed: a reader that goes away (| head) loses no results
        try:
            write_results(res, Path(args.out))
        except OSError as err:
            raise FleetsimError(f"--out {args.out}: cannot write results: {err.strerror or err}") from None
    print(summary_text(res))
    engine = res.summary["engine"]
    how = "compiled core" if engine["core"] == "compiled" else f"Python engine: {engine['python_because']}"
    print(f"wall time {wall:.2f} s ({how})")
    if args.out:
        print(f"results written to {args.out}/")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, args.set or ())
    print(yaml.safe_dump(scenario.model_dump(mode="json", by_alias=True), sort_keys=False), end="")
    deployment = plan_pools(scenario, load_catalog(tuple(Path(p) for p in scenario.catalog_files)), args.scenario)
    print("# deployment")
    for name, p in deployment.pools.items():
        z = p.sizing
        on = deployment.gpus_of(name)
        shared = ""
        if on:
            others = sorted({t.pool for g in on for t in g.tenants} - {name})
            shared = (f" on {len(on)} shared {p.config.sharing.mode} GPU(s) (" + ", ".join(
                f"{g.gpu_id}: {len(g.tenants)} tenants" for g in on) + ")"
                + (f" with pools {', '.join(others)}" if others else ""))
        stages = f", {p.config.pipeline_parallel} pipeline stages" if p.config.pipeline_parallel > 1 else ""
        print(f"#   {name}: {p.config.replicas} x ({p.config.gpus_per_replica} x {p.gpu.name}{stages}){shared}, "
              f"{p.model.name} "
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
        frame = pd.DataFrame([{**g.model_dump(exclude={"sources", "mig_profiles", "mig_memory_slices",
                                                       "vgpu_profiles"}),
                               "mig": " ".join(g.mig_profiles) or "-", "vgpu": " ".join(g.vgpu_profiles) or "-"}
                              for g in catalog.gpus.values()]
                             ).set_index("key")
    elif args.what == "models":
        frame = pd.DataFrame([{**m.model_dump(exclude={"source"}), "params_b": m.n_params / 1e9}
                              for m in catalog.models.values()]).set_index("key")
    elif args.what == "engines":
        from sim.engine.profiles import engine_profiles

        frame = pd.DataFrame([{"profile": p.name, "scheduler": p.scheduler, **p.engine,
                               "gpu_time_scale": p.gpu_time_scale, "overlap_host": p.overlap_host,
                               "measured": p.measured} for p in engine_profiles().values()]).set_index("profile")
    else:
        frame = pd.DataFrame([{**p.model_dump(exclude={"source"}), "usd_per_gpu_hour": p.usd_per_gpu_hour}
                              for p in catalog.prices])
    print(frame.to_string())
    return 0


CALIBRATION_SOURCES = ("aiconfigurator", "csv")
#: Shape columns of a measurements CSV that must be positive integers (n_bytes and kv_len may be fractional).
def _measured_gpu(catalog, root: Path, gpu: str) -> str:
    """Check ``--gpu`` against the GPUs with AIConfigurator vLLM tables under ``root``."""
    if (root / "vllm").is_dir():  # a single GPU's folder: any catalog GPU may be named
        measured = sorted(catalog.gpus)
    else:
        measured = sorted(g for g in catalog.gpus if (root / g / "vllm").is_dir())
    if not measured:
        raise FleetsimError(f"--from aiconfigurator {root}: no GPU folders with vllm/ tables in it (expected e.g. "
                            f"{root}/h100_sxm/vllm/0.24.0/gemm/gemm_perf.parquet)")
    if gpu not in measured:
        if gpu in catalog.gpus:
            raise CatalogError(f"--gpu {gpu}: no AIConfigurator vLLM tables for it under {root}; "
                               f"measured: {', '.join(measured)}")
        raise CatalogError(f"--gpu: {unknown_name('GPU', gpu, measured)}")
    return gpu


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sim.perf.calibrate import calibrate, read_aiconfigurator, read_csv_measurements
    from sim.perf.report_text import error_text

    kind, source = args.source
    if kind not in CALIBRATION_SOURCES:
        raise FleetsimError(f"--from: {unknown_name('measurement source', kind, CALIBRATION_SOURCES)}")
    catalog = load_catalog(tuple(Path(p) for p in args.catalog or ()))
    if kind == "aiconfigurator":
        root = Path(source)
        if not root.is_dir():
            raise FleetsimError(f"--from aiconfigurator {source}: folder not found")
        gpu = _measured_gpu(catalog, root, args.gpu)
    else:
        if args.gpu not in catalog.gpus:
            raise CatalogError(f"--gpu: {unknown_name('GPU', args.gpu, catalog.gpus)}")
        gpu = args.gpu
    spec = catalog.gpus[gpu]
    seed = 0 if args.seed is None else args.seed
    out = out_file(args.out, "--out")
    started = time.perf_counter()
    if kind == "aiconfigurator":
        tables = read_aiconfigurator(root, gpu, spec.architecture)
    else:
        tables = read_csv_measurements(source)
    cal, errors = calibrate(tables, spec, seed)
    try:
        cal.write(out)
    except OSError as err:
        raise FleetsimError(f"--out {args.out}: cannot write the calibration: {err.strerror or err}") from None
    wall = time.perf_counter() - started
    counts = {name: len(getattr(tables, name)) for name in ("gemm", "prefill", "decode", "allreduce")}
    print(f"calibrated {gpu} ({spec.name}) on {tables.source}")
    print("rows: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    print(f"held-out error (seed {seed}: a random 20% of rows plus whole held-out GEMM shapes, prefill and decode "
          f"lengths, left out of the fit):")
    print(error_text(errors))
    print(f"calibration written to {out} ({wall:.1f} s)")
    return 0


def cmd_perf_report(args: argparse.Namespace) -> int:
    from sim.perf import report as rp
    from sim.perf import report_plots, report_text

    data = Path(args.data) if args.data else rp.default_data_dir()
    if not data.is_dir():
        raise FleetsimError(f"--data {data}: folder not found (the AIConfigurator tables are not shipped with the "
                            f"package; pass --data DIR with <gpu>/vllm/ folders for {', '.join(rp.MEASURED_GPUS)})")
    missing = [g for g in rp.MEASURED_GPUS if not (data / g / "vllm").is_dir()]
    if missing:
        raise FleetsimError(f"--data {data}: no {', '.join(f'{g}/vllm/' for g in missing)} folder of AIConfigurator "
                            f"tables")
    out = out_folder(args.out, "--out")
    started = time.perf_counter()
    # A minute or more of silence would look like a hang: say what is going on (stderr, as a progress bar would).
    print(f"fleetsim: evaluating the kernel model on the measured tables in {data}"
          + ("" if args.skip_e2e else " and the end-to-end serving runs") + " (about a minute; more with --refit)",
          file=sys.stderr, flush=True)
    catalog = load_catalog()
    tables = rp.load_measured(data, catalog)
    report = rp.build_report(tables, catalog, seed=args.seed, refit=args.refit, data_label=str(data),
                             e2e=not args.skip_e2e)
    figures = report_plots.report_figures(report)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in figures.items():
            fig.savefig(out / name, dpi=110)
        (out / "fidelity.md").write_text(report_text.fidelity_markdown(report, list(figures)), encoding="utf-8")
    except OSError as err:
        raise FleetsimError(f"--out {args.out}: cannot write the report: {err.strerror or err}") from None
    wall = time.perf_counter() - started
    print("held-out error (section 1 of fidelity.md):")
    print(report_text.error_text(report.held_out_summary))
    print()
    print("cross-GPU spec transfer, all rows of the target (section 3):")
    print(report_text.error_text(report.transfer_summary))
    print()
    check = report.fit_check
    if len(check):
        verdict = "equal to" if check["matches"].all() else "DIFFERENT from"
        print(f"held-out numbers are {verdict} the shipped calibrations' fit_report "
              f"(largest difference {100 * check['max_abs_diff'].max():.3f} pp)")
    if report.e2e is not None and isinstance(report.e2e.summary, dict):
        e = report.e2e.summary
        print(f"end to end ({e.get('rows')} held-out H100 serving runs): TTFT median/p90 APE "
              f"{e.get('ttft_median_ape_pct', float('nan')):.1f}%/{e.get('ttft_p90_ape_pct', float('nan')):.1f}%, "
              f"TPOT {e.get('tpot_median_ape_pct', float('nan')):.1f}%/{e.get('tpot_p90_ape_pct', float('nan')):.1f}%")
    elif report.e2e is not None:
        print(f"end-to-end check skipped: {report.e2e.note}")
    met = report.targets["met"]
    print(f"targets: {int(met.sum())} of {len(met)} family rows met (section 5)")
    print(f"report written to {out}/fidelity.md with {len(figures)} plots ({wall:.1f} s)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sim.report import load_results, write_report

    results = load_results(args.results)
    out_file(args.html, "--html")  # checked before the figures are drawn
    if args.png:
        out_folder(args.png, "--png")
    try:
        written = write_report(results, args.html, args.png)
    except OSError as err:  # a folder that refuses files despite the check (/proc, a full disk, a race)
        raise FleetsimError(f"{err.filename or args.html}: cannot write the report: {err.strerror or err}") from None
    print(f"report written to {written[0]}" + (f" and {len(written) - 1} PNGs to {args.png}" if args.png else ""))
    return 0


def cmd_tco(args: argparse.Namespace) -> int:
    import pandas as pd

    from sim.review import gpu_comparison
    from sim.tco import Ownership, api_prices, break_even_table

    catalog = load_catalog()
    for gpu in args.gpus:
        if gpu not in catalog.gpus:
            raise CatalogError(f"--gpus: {unknown_name('GPU', gpu, catalog.gpus)}")
    if args.model not in catalog.models:
        raise CatalogError(f"--model: {unknown_name('model', args.model, catalog.models)}")
    for flag, value, ok, allowed in (
            ("--years", args.years, args.years > 0, "must be a positive number of years"),
            ("--usd-per-kwh", args.usd_per_kwh, args.usd_per_kwh >= 0, "must be 0 or more"),
            ("--pue", args.pue, args.pue >= 1, "must be at least 1 (1: all power reaches the GPUs)"),
            ("--power-utilisation", args.power_utilisation, 0 <= args.power_utilisation <= 1, "must be in [0, 1]"),
            ("--server-overhead", args.server_overhead, args.server_overhead >= 0, "must be 0 or more"),
            ("--licence-usd-per-gpu-year", args.licence_usd_per_gpu_year, args.licence_usd_per_gpu_year >= 0,
             "must be 0 or more")):
        if not (math.isfinite(value) and ok):
            raise FleetsimError(f"{flag} {value}: {allowed}" + ("" if math.isfinite(value) else " (finite)"))
    try:
        own = Ownership(args.years, args.usd_per_kwh, args.pue, args.power_utilisation, args.server_overhead,
                        args.licence_usd_per_gpu_year)
    except ValueError as err:
        raise FleetsimError(f"ownership assumptions: {err}") from None
    if not 0 < args.target_utilisation <= 1:
        raise FleetsimError(f"--target-utilisation {args.target_utilisation}: must be in (0, 1]")
    if not (math.isfinite(args.tpot_s) and args.tpot_s > 0):
        raise FleetsimError(f"--tpot-s {args.tpot_s}: must be a positive number of seconds")
    if not (math.isfinite(args.input_per_output) and args.input_per_output >= 0):
        raise FleetsimError(f"--input-per-output {args.input_per_output}: must be 0 or more")
    deployments = gpu_comparison([args.model], args.gpus, [args.precision], tpot_s=args.tpot_s)
    if not deployments["fits"].any():
        raise FleetsimError(f"{args.model} in {args.precision} fits none of {', '.join(args.gpus)} at tensor "
                            "parallelism <= 8")
    table = break_even_table(deployments, own, args.target_utilisation, args.input_per_output)
    shown = table.drop(columns=["model", "precision"])
    for column in shown.columns:
        if column.startswith("break_even_vs_"):  # output tokens per month, in millions as the README's table
            shown[column] = [("-" if not math.isfinite(v) else f"{v / 1e6:,.0f} M" if v >= 1e8 else f"{v / 1e6:.3g} M")
                             for v in shown[column]]
    with pd.option_context("display.width", 220, "display.max_columns", 30):
        print(f"{args.model} {args.precision}, TPOT <= {args.tpot_s * 1e3:g} ms, fleets at "
              f"{100 * args.target_utilisation:g}% of capacity, {args.input_per_output:g} input tokens per output "
              "token")
        print(shown.to_string(index=False, float_format=lambda x: f"{x:,.4g}"))
        print("\nbreak_even_vs_*: output tokens a month above which self-hosting that way costs less than the API "
              "(inf: never). APIs ($ per M input / output):")
        for _, a in api_prices().iterrows():
            print(f"  {a['name']}: {a['usd_per_m_input']} / {a['usd_per_m_output']} ({a['date']}; {a['source']})")
    slow = sorted({gpu for gpu, usd in zip(table["gpu"], table["usd_per_m_output_tokens"], strict=True)
                   if not math.isfinite(usd)})
    if slow:  # inf is the honest figure, but say why
        print(f"{', '.join(slow)}: no batch size meets TPOT <= {args.tpot_s * 1e3:g} ms (a step of one sequence is "
              "slower), so no output tokens are served within it: usd_per_m_output_tokens is inf")
    missing = deployments[~deployments["fits"]]
    for _, row in missing.iterrows():
        print(f"{row['gpu']}: {args.model} in {args.precision} does not fit at tensor parallelism <= 8")
    return 0


def _seed(text: str) -> int:
    """A ``--seed`` value: a non-negative integer (argparse reports anything else under the subcommand's usage)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: give a non-negative integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid seed {value}: give a non-negative integer")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fleetsim", description="Simulate LLM inference fleets: latency and cost.")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulate a scenario and print its summary")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--seed", type=_seed, default=None, help="random seed (default: the scenario's)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. pools.l4.replicas=3")
    run.add_argument("--out", help="folder for requests.parquet, timeseries.parquet, cost_by_hour.parquet, ...")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a scenario and print it resolved, or the first error")
    val.add_argument("scenario", help="scenario YAML file")
    val.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. pools.l4.replicas=3")
    val.set_defaults(func=cmd_validate)

    cat = sub.add_parser("catalog", help="list the GPUs, models, prices or engine profiles in the catalog")
    cat.add_argument("what", choices=["gpus", "models", "prices", "engines"])
    cat.add_argument("--file", action="append", help="an extra catalog YAML to include")
    cat.set_defaults(func=cmd_catalog)

    cal = sub.add_parser("calibrate", help="fit kernel-model curves to measured operator latencies")
    cal.add_argument("--from", dest="source", nargs=2, required=True, metavar=("SOURCE", "PATH"),
                     help="'aiconfigurator DIR' (AIConfigurator systems data: DIR/<gpu>/vllm/...) or 'csv FILE'")
    cal.add_argument("--gpu", required=True, help="catalog key of the measured GPU, e.g. h100_sxm")
    cal.add_argument("--out", required=True, help="calibration YAML to write")
    cal.add_argument("--seed", type=_seed, default=None, help="seed of the held-out split (default 0)")
    cal.add_argument("--catalog", action="append", help="an extra catalog YAML (for a GPU not in the shipped one)")
    cal.set_defaults(func=cmd_calibrate)

    rep = sub.add_parser("perf-report", help="kernel-model fidelity report: held-out and cross-GPU errors, plots")
    rep.add_argument("--out", required=True, help="folder for fidelity.md and the PNG plots")
    rep.add_argument("--data", help="AIConfigurator systems data folder (default ../shared/data/calibration/"
                                    "aiconfigurator next to the source checkout)")
    rep.add_argument("--seed", type=_seed, default=None,
                     help="held-out split seed (default: the shipped calibrations'; another seed refits)")
    rep.add_argument("--refit", action="store_true",
                     help="refit the held-out calibrations instead of evaluating the shipped ones")
    rep.add_argument("--skip-e2e", action="store_true", help="leave out the end-to-end serving check (slow)")
    rep.set_defaults(func=cmd_perf_report)

    from sim.plan.cli import add_parser as add_plan
    tco = sub.add_parser("tco", help="cost of a GPU-hour rented or owned, and break-even against hosted APIs",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tco.add_argument("--model", default="llama-3.1-8b", help="catalog key of the model served")
    tco.add_argument("--precision", default="fp8", choices=["bf16", "fp16", "fp8", "int8", "int4"],
                     help="weight precision")
    tco.add_argument("--gpus", nargs="+", default=["l4", "l40s", "h100_sxm"],
                     help="catalog keys of the GPUs to compare")
    tco.add_argument("--tpot-s", type=float, default=0.1, help="the latency target the capacity is measured at")
    tco.add_argument("--target-utilisation", type=float, default=0.6, help="fleet load as a share of capacity")
    tco.add_argument("--input-per-output", type=float, default=2.0, help="input tokens per output token")
    tco.add_argument("--years", type=float, default=3.0, help="owned: amortisation period")
    tco.add_argument("--usd-per-kwh", type=float, default=0.12, help="owned: electricity price")
    tco.add_argument("--pue", type=float, default=1.4, help="owned: power usage effectiveness (cooling, delivery)")
    tco.add_argument("--power-utilisation", type=float, default=0.6, help="owned: load between idle and TDP watts")
    tco.add_argument("--server-overhead", type=float, default=0.0, help="owned: server share of the card price")
    tco.add_argument("--licence-usd-per-gpu-year", type=float, default=0.0,
                     help="owned: software licence per GPU-year, e.g. 4500 (NVIDIA AI Enterprise)")
    tco.set_defaults(func=cmd_tco)

    rpt = sub.add_parser("report", help="an HTML report (and PNGs) of a results folder from fleetsim run --out")
    rpt.add_argument("results", help="results folder")
    rpt.add_argument("--html", required=True, help="HTML file to write (self-contained)")
    rpt.add_argument("--png", default=None, help="folder for the figures as PNG files")
    rpt.set_defaults(func=cmd_report)

    from sim.sweep.cli import add_parser as add_sweep
    from sim.tune.cli import add_parser as add_tune

    add_sweep(sub)
    add_tune(sub)
    add_plan(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except FleetsimError as err:
        print(f"fleetsim: error: {err}", file=sys.stderr)
        return 2
    except InternalError as err:  # an invariant broke: a bug to report, with what reproduces it
        print(f"fleetsim: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("fleetsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (``| head``): stop printing quietly, as a Unix tool does. Stdout is pointed
        # at /dev/null so that Python's flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a broken pipe


if __name__ == "__main__":
    sys.exit(main())

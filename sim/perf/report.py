"""How well the kernel model predicts measured operator times: the data behind ``fleetsim perf-report``.

Four views, each per GPU, operator family and dtype, as median and p90 absolute percentage error (APE,
``|predicted / measured - 1|``):

1. **Held out.** The rows :func:`sim.perf.calibrate.holdout_split` leaves out of the fit (the split
   ``fleetsim calibrate`` uses, so with the same seed these numbers are the calibration's ``fit_report``).
2. **Held out, serving range** (a second view, never a replacement): only GEMMs with ``m >= 16`` and
   ``n, k >= 1024``, prefills of ``seq_len >= 256`` and decodes of ``kv_len >= 128`` (all all-reduce rows).
3. **Cross-GPU transfer.** Fit on all rows of one measured GPU, predict every row of the other from its own
   spec sheet (``KernelModel(other_spec, calibration)``): how well spec transfer works where it can be checked.
4. **L4**: spec transfer from the L40S, with no measurement to compare.

Functions here return DataFrames, strings and matplotlib figures (Agg canvas, no pyplot state); only the CLI
writes files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sim.catalog import Catalog, GpuSpec, load_catalog
from sim.perf.calibrate import Tables, calibrate, fit_calibration, holdout_split, predictions, read_aiconfigurator
from sim.perf.kernel import Calibration, KernelModel, shipped_calibrations

MEASURED_GPUS = ("h100_sxm", "l40s")
FAMILIES = ("gemm", "attention_prefill", "attention_decode", "allreduce")
TABLE_ORDER = ("gemm", "prefill", "decode", "allreduce")  # the row order of sim.perf.calibrate.predictions
HELD_OUT_TARGET = (0.05, 0.15)  # (median, p90) APE per family on held-out rows
TRANSFER_TARGET = (0.08, 0.25)  # (median, p90) APE per family, cross-GPU spec transfer
#: The fit_report stores errors rounded to 4 decimals.
FIT_REPORT_ROUNDING = 5e-5
SERVING_RANGE = ("GEMM m >= 16 with n, k >= 1024; prefill seq_len >= 256; decode kv_len >= 128; "
                 "all all-reduce rows")


def default_data_dir() -> Path:
    """``../shared/data/calibration/aiconfigurator`` next to a source checkout (not shipped in the package)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "calibration" / "aiconfigurator"


def load_measured(data_dir: Path | str, catalog: Catalog | None = None,
                  gpus: tuple[str, ...] = MEASURED_GPUS) -> dict[str, Tables]:
    """The AIConfigurator vLLM tables of each measured GPU under ``data_dir``."""
    catalog = catalog or load_catalog()
    return {g: read_aiconfigurator(data_dir, g, catalog.gpus[g].architecture) for g in gpus}


# -- per-row predictions ---------------------------------------------------------------------------------------

def serving_mask(tables: Tables) -> np.ndarray:
    """True for the rows in the serving-relevant range, in the row order of :func:`predictions`."""
    g, p, d = tables.gemm, tables.prefill, tables.decode
    return np.concatenate([
        ((g["m"] >= 16) & (g["n"] >= 1024) & (g["k"] >= 1024)).to_numpy(bool),
        (p["seq_len"] >= 256).to_numpy(bool),
        (d["kv_len"] >= 128).to_numpy(bool),
        np.ones(len(tables.allreduce), bool),
    ])


def held_out_predictions(tables: Tables, gpu: GpuSpec, seed: int,
                         calibration: Calibration | None = None) -> tuple[pd.DataFrame, Calibration]:
    """Predictions of the rows ``holdout_split(tables, seed)`` leaves out, by ``calibration`` (which must have
    been fitted on the other rows with that seed), or by a fresh ``calibrate(tables, gpu, seed)`` if None.

    Returns the held-out rows (``family, dtype, measured_s, predicted_s, ape, serving``) and the calibration.
    """
    if calibration is None:
        calibration, _ = calibrate(tables, gpu, seed)
    held = holdout_split(tables, seed)
    rows = Tables(*(getattr(tables, name)[held[name]].reset_index(drop=True) for name in TABLE_ORDER),
                  source=tables.source)
    pred = predictions(KernelModel(gpu, calibration), rows)
    pred["serving"] = serving_mask(rows)
    return pred, calibration


def transfer_predictions(tables: dict[str, Tables], specs: dict[str, GpuSpec],
                         fitted: dict[str, Calibration] | None = None) -> pd.DataFrame:
    """Every row of each measured GPU predicted from the other's all-rows fit and its own spec sheet.

    ``fitted`` gives the all-rows calibrations (default: ``fit_calibration(tables[gpu], spec)`` for each).
    Columns: ``source, target, family, dtype, measured_s, predicted_s, ape, serving``.
    """
    fitted = fitted or {g: fit_calibration(tables[g], specs[g]) for g in tables}
    out = []
    for source, cal in fitted.items():
        for target, rows in tables.items():
            if target == source:
                continue
            pred = predictions(KernelModel(specs[target], cal), rows)
            pred["serving"] = serving_mask(rows)
            pred.insert(0, "target", target)
            pred.insert(0, "source", source)
            out.append(pred)
    return pd.concat(out, ignore_index=True)


def summarise(pred: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows, median and p90 APE per group (families in :data:`FAMILIES` order)."""
    frame = pred.groupby(by, sort=False).agg(
        rows=("ape", "size"), median_ape=("ape", "median"),
        p90_ape=("ape", lambda x: float(np.quantile(x, 0.9)))).reset_index()
    if "family" not in by:
        return frame
    frame["_f"] = frame["family"].map({f: i for i, f in enumerate(FAMILIES)})
    keys = [c for c in by if c not in ("family", "dtype")] + ["_f"] + (["dtype"] if "dtype" in by else [])
    return frame.sort_values(keys, kind="stable").drop(columns="_f").reset_index(drop=True)


def knot_rounding(calibration: Calibration) -> float:
    """Half a unit of the last decimal the calibration's correction values are stored with (log time)."""
    grids = [c.correction.values for group in (calibration.gemm, calibration.attention_prefill,
                                               calibration.attention_decode, calibration.allreduce)
             for c in group.values()]
    for digits in range(1, 9):
        if all(np.allclose(v, np.round(v, digits), rtol=0, atol=1e-12) for v in grids):
            return 0.5 * 10.0**-digits
    return 0.0


def fit_report_check(summary: pd.DataFrame, calibration: Calibration) -> pd.DataFrame:
    """Held-out summary of one GPU against ``calibration.fit_report``: one row per family/dtype.

    ``matches`` is true when the held-out row counts agree and the median and p90 agree within ``tolerance``:
    the fit_report's own rounding plus what rounding the stored correction values can do (a change of ``d`` in
    log time moves a row's APE by at most ``(1 + APE) d``; 0 for a calibration fitted in this process).
    """
    stored = calibration.fit_report.get("held_out", {})
    d = knot_rounding(calibration)
    rows = []
    keys = [f"{r.family}/{r.dtype}" for r in summary.itertuples()]
    for key in dict.fromkeys([*keys, *stored]):
        mine = summary[[k == key for k in keys]]
        ref = stored.get(key)
        row = {"key": key, "rows": int(mine["rows"].iloc[0]) if len(mine) else None,
               "median_ape": float(mine["median_ape"].iloc[0]) if len(mine) else np.nan,
               "p90_ape": float(mine["p90_ape"].iloc[0]) if len(mine) else np.nan,
               "fit_report_rows": ref["held_out_rows"] if ref else None,
               "fit_report_median_ape": ref["median_ape"] if ref else np.nan,
               "fit_report_p90_ape": ref["p90_ape"] if ref else np.nan}
        diff = max(abs(row["median_ape"] - row["fit_report_median_ape"]),
                   abs(row["p90_ape"] - row["fit_report_p90_ape"]))
        tolerance = FIT_REPORT_ROUNDING + 1.01 * d * (1 + max(row["fit_report_median_ape"], row["fit_report_p90_ape"]))
        row["max_abs_diff"], row["tolerance"] = diff, tolerance
        row["matches"] = bool(ref and len(mine) and row["rows"] == ref["held_out_rows"] and diff <= tolerance)
        rows.append(row)
    return pd.DataFrame(rows)


def targets_table(summary: pd.DataFrame, target: tuple[float, float], scope: str) -> pd.DataFrame:
    """Each summary row against a (median, p90) target, with a plain verdict."""
    out = summary.copy()
    out.insert(0, "scope", scope)
    out["target_median"], out["target_p90"] = target
    verdicts = []
    for r in out.itertuples():
        missed = []
        if r.median_ape > r.target_median:
            missed.append(f"median {_pct(r.median_ape)} is {_pp(r.median_ape - r.target_median)} over "
                          f"{_pct(r.target_median)}")
        if r.p90_ape > r.target_p90:
            missed.append(f"p90 {_pct(r.p90_ape)} is {_pp(r.p90_ape - r.target_p90)} over {_pct(r.target_p90)}")
        verdicts.append("met" if not missed else "missed: " + "; ".join(missed))
    out["verdict"] = verdicts
    out["met"] = [v == "met" for v in verdicts]
    return out


# -- L4: spec transfer only ------------------------------------------------------------------------------------

def l4_table(catalog: Catalog | None = None, model: str = "llama-3.1-8b") -> pd.DataFrame:
    """Operator times of ``model`` predicted on the L40S (its own calibration) and on the L4 (L40S curves, L4
    spec sheet). Nothing here is measured on an L4."""
    catalog = catalog or load_catalog()
    m = catalog.models[model]
    l40s, l4 = KernelModel.for_gpu(catalog.gpus["l40s"]), KernelModel.for_gpu(catalog.gpus["l4"])
    h, kv, d = m.n_heads, m.n_kv_heads, m.head_dim
    qkv = (h + 2 * kv) * d
    ops = [
        (f"GEMM qkv m=1 ({qkv}x{m.hidden_size})", "bandwidth", lambda km: km.gemm_s(1, qkv, m.hidden_size)),
        (f"GEMM gate_up m=16 ({2 * m.intermediate_size}x{m.hidden_size})", "bandwidth",
         lambda km: km.gemm_s(16, 2 * m.intermediate_size, m.hidden_size)),
        (f"GEMM down m=4096 ({m.hidden_size}x{m.intermediate_size})", "bf16",
         lambda km: km.gemm_s(4096, m.hidden_size, m.intermediate_size)),
        (f"GEMM qkv m=2048 fp8 ({qkv}x{m.hidden_size})", "fp8",
         lambda km: km.gemm_s(2048, qkv, m.hidden_size, "fp8")),
        ("prefill attention b=1 seq=2048", "bf16", lambda km: km.attention_prefill_s(1, 2048, h, kv, d)),
        ("decode attention b=16 kv=2048", "bandwidth", lambda km: km.attention_decode_s(16, 2048, h, kv, d)),
        ("decode attention b=64 kv=8192", "bandwidth", lambda km: km.attention_decode_s(64, 8192, h, kv, d)),
        ("all-reduce 8 MiB over 2 GPUs", "link", lambda km: km.allreduce_s(8 * 2**20, 2)),
        ("all-reduce 8 MiB over 4 GPUs", "link", lambda km: km.allreduce_s(8 * 2**20, 4)),
    ]
    peak = {"bandwidth": lambda g: g.memory_bandwidth_gb_s, "bf16": lambda g: g.bf16_tflops,
            "fp8": lambda g: g.fp8_tflops, "link": lambda g: g.interconnect_gb_s}
    rows = []
    for name, bound, op in ops:
        a, b = op(l40s), op(l4)
        rows.append({"operator": name, "l40s_us": a * 1e6, "l4_us": b * 1e6, "l4_over_l40s": b / a,
                     "spec_ratio": peak[bound](l40s.gpu) / peak[bound](l4.gpu), "spec_bound": bound})
    return pd.DataFrame(rows)


# -- end-to-end check (sim.perf.validation, when present) ------------------------------------------------------

@dataclass
class EndToEnd:
    """The end-to-end check's table and summary, or why it was skipped (``note``)."""

    table: pd.DataFrame | None = None
    summary: dict | None = None
    note: str = ""


def e2e_check() -> EndToEnd:
    """Measured vs simulated vLLM serving on H100 (``sim.perf.validation``), on the rows its split holds out of
    the step-overhead fit, with the shipped overheads. Skipped with a note if the module is absent or fails."""
    try:
        from sim.perf import validation
    except ImportError:
        return EndToEnd(note="`sim.perf.validation` is not in this build, so the end-to-end check against "
                             "measured H100 serving (TTFT/TPOT) is not part of this report.")
    try:
        rows = validation.load_rows()
        _, report_rows = validation.split_rows(rows)
        table = validation.validation_table(report_rows, None, None)
        return EndToEnd(table, validation.summary(table),
                        f"{len(report_rows)} of {len(rows)} measured rows: those `split_rows` keeps out of the "
                        f"step-overhead fit, simulated with the shipped overheads.")
    except Exception as err:  # another module's failure must not lose the rest of the report
        return EndToEnd(note=f"`sim.perf.validation` failed ({type(err).__name__}: {err}).")


def e2e_markdown(e2e: EndToEnd | None) -> str:
    """The end-to-end section's body."""
    if e2e is None:
        return "_Skipped on request (`--skip-e2e`)._"
    if e2e.table is None:
        return f"_Skipped: {e2e.note}_"
    s = e2e.summary if isinstance(e2e.summary, dict) else {}
    lines = [
        "Whole-simulator check (`sim.perf.validation`): each measured vLLM benchmark run on H100 SXM (closed loop "
        "of `concurrency` clients, fixed prompt/output lengths) simulated with the calibrated kernel model. "
        + e2e.note,
        "",
        f"- rows: {s.get('rows', len(e2e.table))}",
        f"- TTFT: median APE {s.get('ttft_median_ape_pct', float('nan')):.1f}%, "
        f"p90 {s.get('ttft_p90_ape_pct', float('nan')):.1f}%",
        f"- TPOT: median APE {s.get('tpot_median_ape_pct', float('nan')):.1f}%, "
        f"p90 {s.get('tpot_p90_ape_pct', float('nan')):.1f}%",
        "",
    ]
    if not isinstance(e2e.summary, dict):
        lines += [str(e2e.summary), ""]
    cols = [c for c in ("label", "ttft_ms", "pred_ttft_ms", "ttft_ape_pct", "tpot_ms", "pred_tpot_ms",
                        "tpot_ape_pct") if c in e2e.table]
    num = {c: (lambda v: f"{v:,.1f}") for c in cols if c != "label"}
    lines.append(markdown_table(e2e.table[cols], num))
    return "\n".join(lines)


# -- the report ------------------------------------------------------------------------------------------------

@dataclass
class FidelityReport:
    """Everything ``fidelity.md`` and the plots are made of."""

    held_out: pd.DataFrame  # per row: gpu, family, dtype, measured_s, predicted_s, ape, serving
    transfer: pd.DataFrame  # per row: source, target, family, dtype, measured_s, predicted_s, ape, serving
    held_out_summary: pd.DataFrame
    held_out_serving_summary: pd.DataFrame
    transfer_summary: pd.DataFrame
    transfer_serving_summary: pd.DataFrame
    fit_check: pd.DataFrame  # per gpu and family/dtype: this report vs the calibration's fit_report
    targets: pd.DataFrame
    l4: pd.DataFrame
    e2e: EndToEnd | None
    meta: dict = field(default_factory=dict)


def build_report(tables: dict[str, Tables], catalog: Catalog | None = None, seed: int | None = None,
                 refit: bool = False, calibrations: dict[str, Calibration] | None = None,
                 data_label: str = "", e2e: bool = True,
                 transfer_calibrations: dict[str, Calibration] | None = None) -> FidelityReport:
    """All views of the fidelity report.

    Held-out rows are predicted by each GPU's shipped calibration (or ``calibrations[gpu]``) when its
    ``fit_report`` seed equals ``seed`` (default: that seed), since it was fitted on the other rows of that
    split; otherwise, or with ``refit``, by a fresh :func:`~sim.perf.calibrate.calibrate` with ``seed``.
    Cross-GPU transfer uses all-rows fits (``transfer_calibrations``, default fitted here).
    """
    catalog = catalog or load_catalog()
    specs = {g: catalog.gpus[g] for g in tables}
    reference = calibrations if calibrations is not None else shipped_calibrations()
    held, checks, how = [], [], {}
    for gpu, rows in tables.items():
        ref = reference.get(gpu)
        ref_seed = ref.fit_report.get("seed") if ref is not None else None
        use_seed = seed if seed is not None else (ref_seed if ref_seed is not None else 0)
        use = ref if (ref is not None and not refit and ref_seed == use_seed) else None
        pred, _ = held_out_predictions(rows, specs[gpu], use_seed, use)
        how[gpu] = {"seed": use_seed, "model": "refit" if use is None else "given" if calibrations is not None
                    else "shipped",
                    "reference_seed": ref_seed}
        pred.insert(0, "gpu", gpu)
        held.append(pred)
        if ref is not None and ref_seed == use_seed:
            check = fit_report_check(summarise(pred, ["family", "dtype"]), ref)
            check.insert(0, "gpu", gpu)
            checks.append(check)
    held_out = pd.concat(held, ignore_index=True)
    transfer = transfer_predictions(tables, specs, transfer_calibrations) if len(tables) > 1 else pd.DataFrame(
        columns=["source", "target", "family", "dtype", "measured_s", "predicted_s", "ape", "serving"])
    held_summary = summarise(held_out, ["gpu", "family", "dtype"])
    held_serving = summarise(held_out[held_out["serving"]], ["gpu", "family", "dtype"])
    transfer_summary = summarise(transfer, ["source", "target", "family", "dtype"]) if len(transfer) else None
    transfer_serving = (summarise(transfer[transfer["serving"].astype(bool)], ["source", "target", "family", "dtype"])
                        if len(transfer) else None)
    targets = [targets_table(held_summary, HELD_OUT_TARGET, "held out")]
    if transfer_summary is not None:
        t = transfer_summary.rename(columns={"target": "gpu"})
        t["gpu"] = t["source"] + " -> " + t["gpu"]
        targets.append(targets_table(t.drop(columns="source"), TRANSFER_TARGET, "transfer"))
    return FidelityReport(
        held_out=held_out, transfer=transfer, held_out_summary=held_summary, held_out_serving_summary=held_serving,
        transfer_summary=transfer_summary if transfer_summary is not None else pd.DataFrame(),
        transfer_serving_summary=transfer_serving if transfer_serving is not None else pd.DataFrame(),
        fit_check=pd.concat(checks, ignore_index=True) if checks else pd.DataFrame(),
        targets=pd.concat(targets, ignore_index=True), l4=l4_table(catalog), e2e=e2e_check() if e2e else None,
        meta={"data": data_label, "how": how,
              "sources": {g: t.source for g, t in tables.items()}},
    )


# -- text ------------------------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}%"


def _pp(x: float) -> str:
    return f"{100 * x:.1f} pp"


def markdown_table(frame: pd.DataFrame, formats: dict | None = None) -> str:
    """A GitHub markdown table; ``formats`` maps a column to a function of its value."""
    formats = formats or {}
    head = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in frame.itertuples(index=False):
        cells = [formats[c](v) if c in formats else ("" if v is None else str(v)) for c, v in
                 zip(frame.columns, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(frame: pd.DataFrame, formats: dict | None = None) -> str:
    """A plain aligned table for the terminal (first column left-aligned, the others right-aligned)."""
    formats = formats or {}
    head = [str(c) for c in frame.columns]
    rows = [[formats[c](v) if c in formats else str(v) for c, v in zip(frame.columns, r, strict=True)]
            for r in frame.itertuples(index=False)]
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                             strict=True)))

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


ERROR_FORMATS = {"median_ape": _pct, "p90_ape": _pct}


def error_text(errors: pd.DataFrame) -> str:
    """An error table (``rows, median_ape, p90_ape`` plus group columns) for the terminal, families in order."""
    if "family" in errors:
        groups = [c for c in errors.columns if c not in ("family", "dtype", "rows", "median_ape", "p90_ape")]
        keys = errors[groups].assign(_f=errors["family"].map({f: i for i, f in enumerate(FAMILIES)}),
                                     _d=errors["dtype"].astype(str) if "dtype" in errors else "")
        errors = errors.loc[keys.sort_values([*groups, "_f", "_d"], kind="stable").index]
    return text_table(errors, ERROR_FORMATS)


def _errors_md(frame: pd.DataFrame) -> str:
    return markdown_table(frame, ERROR_FORMATS)


def _how_text(report: FidelityReport) -> str:
    lines = []
    for gpu, h in report.meta["how"].items():
        if h["model"] == "shipped":
            lines.append(f"- `{gpu}`: the shipped calibration (`sim/perf/calibrations/{gpu}.yaml`), fitted with seed "
                         f"{h['seed']} on the rows this split keeps; evaluated on the rows it leaves out.")
        elif h["model"] == "given":
            lines.append(f"- `{gpu}`: the calibration passed in, fitted with seed {h['seed']} on the rows this "
                         f"split keeps; evaluated on the rows it leaves out.")
        else:
            lines.append(f"- `{gpu}`: refitted here with `calibrate(tables, gpu, seed={h['seed']})` on the training "
                         f"rows of that split (the reference calibration's seed is {h['reference_seed']}).")
    return "\n".join(lines)


def _fit_check_text(report: FidelityReport) -> str:
    check = report.fit_check
    if check.empty:
        return ("No reference calibration with the same seed to compare with: the held-out numbers above are this "
                "run's only record.")
    parts = []
    for gpu, rows in check.groupby("gpu", sort=False):
        worst = float(np.nanmax(rows["max_abs_diff"])) if len(rows) else float("nan")
        kind = "given" if report.meta["how"][gpu]["model"] == "given" else "shipped"
        if rows["matches"].all():
            parts.append(f"- `{gpu}`: **equal** to the {kind} calibration's `fit_report` (seed "
                         f"{report.meta['how'][gpu]['seed']}) in every family/dtype: the same held-out row "
                         f"counts, and median and p90 within {100 * worst:.4f} pp (the largest difference; allowed: "
                         f"up to {100 * float(rows['tolerance'].max()):.3f} pp, what the rounding of the stored "
                         f"correction values and of the fit_report can explain).")
        else:
            bad = ", ".join(rows.loc[~rows["matches"], "key"])
            parts.append(f"- `{gpu}`: **differs** from the {kind} calibration's `fit_report` in {bad} (largest "
                         f"difference {100 * worst:.4f} pp): the data or the fitting code changed since the "
                         f"calibration was written; re-run `fleetsim calibrate`.")
    return "\n".join(parts)


def _verdict_lines(targets: pd.DataFrame) -> str:
    met = targets[targets["met"]]
    missed = targets[~targets["met"]]
    lines = [f"{len(met)} of {len(targets)} rows meet their target; {len(missed)} miss it."]
    if len(met):
        lines.append("Met: " + ", ".join(f"{r.gpu} {r.family}/{r.dtype}" for r in met.itertuples()) + ".")
    return " ".join(lines)


def fidelity_markdown(report: FidelityReport, figures: list[str] | None = None) -> str:
    """``fidelity.md``: every table of the report, in words and numbers."""
    held_t = report.targets[report.targets["scope"] == "held out"]
    trans_t = report.targets[report.targets["scope"] == "transfer"]
    target_cols = ["gpu", "family", "dtype", "rows", "median_ape", "p90_ape", "verdict"]
    out = [
        "# Kernel-model fidelity",
        "",
        "How well fleetsim's kernel model (`sim/perf/kernel.py`) predicts measured operator latencies. Error is "
        "the absolute percentage error (APE) of a row, `|predicted / measured - 1|`; tables give its median and "
        "90th percentile (p90) over rows. Written by `fleetsim perf-report`.",
        "",
        f"Measurements: {report.meta.get('data') or 'see sources below'}. "
        + "; ".join(f"`{g}`: {s}" for g, s in report.meta["sources"].items()) + ".",
        "Measured data: NVIDIA AIConfigurator (ai-dynamo/aiconfigurator, `aiconfigurator-core` 0.12.0), Apache-2.0, "
        "Copyright (c) 2026 NVIDIA CORPORATION & AFFILIATES. The rows the fit uses are filtered as described in "
        "`sim/perf/calibrate.py` (no eager fp8_block GEMMs; default vLLM kernels only; L40S decode rows whose KV "
        "fits in its 96 MB L2 dropped).",
        "",
        "## 1. Held-out error (the primary view)",
        "",
        "Rows left out of the fit by `holdout_split(tables, seed)`, the split `fleetsim calibrate` uses: a random "
        "20% of rows plus whole held-out groups (10% of GEMM (n, k) shapes, 2 prefill sequence lengths, 2 decode "
        "KV lengths). Model used:",
        "",
        _how_text(report),
        "",
        _errors_md(report.held_out_summary),
        "",
        "**Check against the calibration files.**",
        "",
        _fit_check_text(report),
        "",
        "## 2. Held-out error, serving range only (a second view)",
        "",
        f"The same held-out rows restricted to shapes a serving engine runs: {SERVING_RANGE}. This view leaves "
        "out tiny GEMMs and short sequences where fixed floors and L2 effects dominate; it does **not** replace "
        "section 1.",
        "",
        _errors_md(report.held_out_serving_summary),
        "",
        "## 3. Cross-GPU spec transfer",
        "",
        "Fit on **all** rows of one measured GPU (`fit_calibration(tables, gpu)`), then predict **every** row of "
        "the other with `KernelModel(other_gpu_spec, that_calibration)`: the other GPU's peaks, bandwidth and "
        "link from its spec sheet, the efficiencies and corrections of the source. This is how every unmeasured "
        "GPU (the L4 above all) is predicted, measured here where it can be.",
        "",
        _errors_md(report.transfer_summary) if len(report.transfer_summary) else "_Needs two measured GPUs._",
        "",
        "Second view, serving range only:",
        "",
        _errors_md(report.transfer_serving_summary) if len(report.transfer_serving_summary) else "",
        "",
        "The L40S 4- and 8-GPU all-reduce rows come from a node without usable GPU peer-to-peer (bus bandwidth "
        "2-5 GB/s); that is topology, not the GPU, so all-reduce transfer errors to or from them say little about "
        "spec transfer. Hopper and Ada differ in kernels (FA3 vs FA2, CUTLASS sm_90 vs sm_89) and memory (HBM3 "
        "vs GDDR6 with a 96 MB L2), so this pair is a harder transfer than L40S -> L4. The L40S decode curve is "
        "fitted only on rows whose KV footprint exceeds 130 MB (smaller ones are L2-resident artefacts of the "
        "benchmark), so L40S -> H100 decode extrapolates to the H100's small, floor-dominated calls.",
        "",
        "## 4. L4: spec transfer from the L40S, nothing measured",
        "",
        "No L4 operator latency is measured (none is published). The L4 uses the L40S's fitted efficiencies "
        "(same Ada sm_89 design, same vLLM kernels) with its own spec sheet (121 bf16 TFLOPS, 300 GB/s). The "
        "numbers below are predictions with **no measurement to compare**; the L4's 72 W power cap may throttle "
        "sustained kernels more than the L40S's 350 W, which the model does not know. Section 3 is the only "
        "evidence of how well spec transfer works.",
        "",
        markdown_table(report.l4, {"l40s_us": lambda v: f"{v:,.1f}", "l4_us": lambda v: f"{v:,.1f}",
                                   "l4_over_l40s": lambda v: f"{v:.2f}", "spec_ratio": lambda v: f"{v:.2f}"}),
        "",
        "`l4_over_l40s` is the predicted L4 time over the L40S time; `spec_ratio` is the L40S spec figure over "
        "the L4's for the bound named (memory bandwidth, tensor peak or PCIe link). They differ where fixed floors "
        "or corrections at a shape matter. Both cards sit on PCIe Gen4 x16, so the L4 inherits the L40S's "
        "all-reduce curves unchanged, including the 4- and 8-GPU ones measured on a node without GPU peer-to-peer "
        "(section 3): a multi-L4 node with working P2P would be faster than predicted.",
        "",
        "## 5. Targets",
        "",
        f"Held-out target per family: median <= {_pct(HELD_OUT_TARGET[0])}, p90 <= {_pct(HELD_OUT_TARGET[1])}. "
        f"Transfer target: median <= {_pct(TRANSFER_TARGET[0])}, p90 <= {_pct(TRANSFER_TARGET[1])}. Judged on the "
        "primary views (sections 1 and 3). Families with few rows (all-reduce: a handful held out) give noisy "
        "percentiles.",
        "",
        "Held out: " + _verdict_lines(held_t),
        "",
        markdown_table(held_t[target_cols], ERROR_FORMATS),
        "",
    ]
    if len(trans_t):
        out += ["Transfer: " + _verdict_lines(trans_t), "",
                markdown_table(trans_t[target_cols], ERROR_FORMATS), ""]
    out += ["## 6. End-to-end check (measured H100 serving)", "", e2e_markdown(report.e2e), ""]
    if figures:
        out += ["## Plots", ""]
        out += [f"![{name}]({name})" for name in figures]
        out.append("")
    return "\n".join(out)


# -- plots -----------------------------------------------------------------------------------------------------

def _figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (4.2, 3.8)) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())


def _axes(ax):
    return ax if ax is not None else _figure(1)[1][0]


def plot_predicted_vs_measured(pred: pd.DataFrame, *, ax=None, title: str = ""):
    """Predicted against measured latency (µs, log-log), one colour per dtype, with y = x and ±15%."""
    ax = _axes(ax)
    if len(pred) == 0:
        ax.set_title(f"{title} (no rows)")
        return ax
    few = len(pred) < 500
    for dtype, rows in pred.groupby("dtype", sort=True):
        ax.scatter(rows["measured_s"] * 1e6, rows["predicted_s"] * 1e6, s=14 if few else 2, alpha=0.8 if few else 0.25,
                   label=str(dtype), rasterized=True, linewidths=0)
    lo = float(min(pred["measured_s"].min(), pred["predicted_s"].min())) * 1e6 / 1.5
    hi = float(max(pred["measured_s"].max(), pred["predicted_s"].max())) * 1e6 * 1.5
    line = np.array([lo, hi])
    ax.plot(line, line, color="black", lw=0.8)
    for f in (0.85, 1.15):
        ax.plot(line, line * f, color="grey", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured µs")
    ax.set_ylabel("predicted µs")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(markerscale=1 if few else 4, fontsize="small")
    return ax


def plot_error_cdf(pred: pd.DataFrame, by: list[str], *, ax=None, title: str = "", linestyle: str = "-"):
    """Empirical CDF of APE in percent (log x), one line per ``by`` group; dotted lines at 5%, 15%, 25%."""
    ax = _axes(ax)
    top = 1000.0
    for key, rows in pred.groupby(by, sort=True):
        values = np.sort(np.maximum(100 * rows["ape"].to_numpy(float), 1e-3))
        top = max(top, 1.5 * float(values[-1]))
        label = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", ls=linestyle, label=label)
    for x in (5, 15, 25):
        ax.axvline(x, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlim(1e-2, top)
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}%")
    ax.set_xlabel("absolute percentage error")
    ax.set_ylabel("fraction of rows")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left")
    return ax


def report_figures(report: FidelityReport) -> dict[str, Figure]:
    """The report's figures by file name: predicted vs measured per GPU (held out) and per transfer direction,
    one panel per operator family; error CDFs per family."""
    figures = {}
    for gpu, rows in report.held_out.groupby("gpu", sort=False):
        fig, axes = _figure(len(FAMILIES))
        for ax, family in zip(axes, FAMILIES, strict=True):
            plot_predicted_vs_measured(rows[rows["family"] == family], ax=ax, title=f"{gpu} {family} (held out)")
        figures[f"predicted_vs_measured_{gpu}.png"] = fig
    if len(report.transfer):
        for (source, target), rows in report.transfer.groupby(["source", "target"], sort=False):
            fig, axes = _figure(len(FAMILIES))
            for ax, family in zip(axes, FAMILIES, strict=True):
                plot_predicted_vs_measured(rows[rows["family"] == family], ax=ax,
                                           title=f"{target} {family} ({source} curves)")
            figures[f"transfer_{source}_to_{target}.png"] = fig
    fig, axes = _figure(len(FAMILIES), 2)
    for i, family in enumerate(FAMILIES):
        held = report.held_out[report.held_out["family"] == family]
        plot_error_cdf(held, ["gpu", "dtype"], ax=axes[i], title=f"{family}: held out")
        if len(report.transfer):
            moved = report.transfer[report.transfer["family"] == family].assign(
                direction=lambda f: f["source"] + "->" + f["target"])
            plot_error_cdf(moved, ["direction", "dtype"], ax=axes[len(FAMILIES) + i],
                           title=f"{family}: cross-GPU transfer", linestyle="--")
        else:
            axes[len(FAMILIES) + i].set_visible(False)
    figures["error_cdf.png"] = fig
    return figures

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

Functions here return DataFrames; :mod:`sim.perf.report_text` renders them as markdown and terminal tables,
:mod:`sim.perf.report_plots` as figures; only the CLI writes files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.catalog import Catalog, GpuSpec, load_catalog
from sim.perf.calibrate import Tables, calibrate, fit_calibration, holdout_split, predictions, read_aiconfigurator
from sim.perf.kernel import Calibration, KernelModel, shipped_calibrations

MEASURED_GPUS = ("h100_sxm", "l40s")
FAMILIES = ("gemm", "attention_prefill", "attention_decode", "allreduce")
TABLE_ORDER = ("gemm", "prefill", "decode", "allreduce")  # the row order of sim.perf.calibrate.predictions
HELD_OUT_TARGET = (0.05, 0.15)  # (median, p90) APE per family on held-out rows
TRANSFER_TARGET = (0.08, 0.25)  # (median, p90) APE per family, cross-GPU spec transfer
E2E_TARGET_PCT = {"tpot": 10.0, "ttft": 20.0}  # median APE of mean TPOT / TTFT on the held-out serving rows
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


# -- formatting (shared with sim.perf.report_text) ---------------------------------------------------------------------

def pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}%"


def pp(x: float) -> str:
    return f"{100 * x:.1f} pp"


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
            missed.append(f"median {pct(r.median_ape)} is {pp(r.median_ape - r.target_median)} over "
                          f"{pct(r.target_median)}")
        if r.p90_ape > r.target_p90:
            missed.append(f"p90 {pct(r.p90_ape)} is {pp(r.p90_ape - r.target_p90)} over {pct(r.target_p90)}")
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


# -- end-to-end check (sim.perf.validation) ------------------------------------------------------

@dataclass
class EndToEnd:
    """The end-to-end check's table and summary, or why it was skipped (``note``)."""

    table: pd.DataFrame | None = None
    summary: dict | None = None
    note: str = ""


def e2e_groups(table: pd.DataFrame) -> pd.DataFrame:
    """Signed median error (percent) of mean TTFT and TPOT per (model, precision, prompt length): where the
    end-to-end error comes from."""
    parts = table["label"].str.split("/")
    frame = table.assign(model=parts.str[0] + "/" + parts.str[1],
                         ttft_err_pct=100 * (table["pred_ttft_ms"] / table["ttft_ms"] - 1),
                         tpot_err_pct=100 * (table["pred_tpot_ms"] / table["tpot_ms"] - 1))
    return frame.groupby(["model", "isl"], sort=True).agg(
        rows=("label", "size"), ttft_signed_median_pct=("ttft_err_pct", "median"),
        ttft_median_ape_pct=("ttft_ape_pct", "median"), tpot_signed_median_pct=("tpot_err_pct", "median"),
    ).reset_index()


def e2e_check() -> EndToEnd:
    """Measured vs simulated vLLM serving on H100 (:mod:`sim.perf.validation`), on the rows its split holds out
    of the step-overhead fit, with the shipped overheads. Skipped with a note if it fails."""
    from sim.perf import validation

    try:
        rows = validation.load_rows()
        _, report_rows = validation.split_rows(rows)
        table = validation.validation_table(report_rows)
        return EndToEnd(table, validation.summary(table),
                        f"{len(report_rows)} of {len(rows)} measured rows: those `split_rows` keeps out of the "
                        f"fit of the host overheads and the server's token budget "
                        f"({validation.harness_token_budget()}), simulated with the shipped figures.")
    except Exception as err:  # another module's failure must not lose the rest of the report
        return EndToEnd(note=f"`sim.perf.validation` failed ({type(err).__name__}: {err}).")


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

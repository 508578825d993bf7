"""The fidelity report as text: markdown for ``fidelity.md`` and plain tables for the terminal.

Pure functions of a :class:`sim.perf.report.FidelityReport`; nothing here reads measurements or writes files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.perf.report import (
    E2E_TARGET_PCT,
    FAMILIES,
    HELD_OUT_TARGET,
    SERVING_RANGE,
    TRANSFER_TARGET,
    EndToEnd,
    FidelityReport,
    e2e_groups,
    pct,
)


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
    for metric in ("ttft", "tpot"):
        got, target = s.get(f"{metric}_median_ape_pct"), E2E_TARGET_PCT[metric]
        if got is not None:
            verdict = "met" if got <= target else f"**missed by {got - target:.1f} points**"
            lines.append(f"- target {metric.upper()} median APE <= {target:.0f}%: {verdict}")
    lines += ["", "Where the error comes from (signed median error by model, precision and prompt length; "
              "positive = predicted slower):", ""]
    groups = e2e_groups(e2e.table)
    formats = {c: (lambda v: f"{v:+.1f}%") if "signed" in c else (lambda v: f"{v:.1f}%")
               for c in groups.columns if c.endswith("_pct")}
    lines += [markdown_table(groups, formats),
              "", "Every row:", ""]
    cols = [c for c in ("label", "ttft_ms", "pred_ttft_ms", "ttft_ape_pct", "tpot_ms", "pred_tpot_ms",
                        "tpot_ape_pct") if c in e2e.table]
    num = {c: (lambda v: f"{v:,.1f}") for c in cols if c != "label"}
    lines.append(markdown_table(e2e.table[cols], num))
    return "\n".join(lines)


ERROR_FORMATS = {"median_ape": pct, "p90_ape": pct}


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
        f"Held-out target per family: median <= {pct(HELD_OUT_TARGET[0])}, p90 <= {pct(HELD_OUT_TARGET[1])}. "
        f"Transfer target: median <= {pct(TRANSFER_TARGET[0])}, p90 <= {pct(TRANSFER_TARGET[1])}. Judged on the "
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


"""``fleetsim calibrate`` and ``fleetsim perf-report``: a calibration round trip on synthetic measurements, bad
input, and (where the measured tables are present in ``../shared``) the fidelity report on the real data."""

from __future__ import annotations

import contextlib
import io
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.catalog import load_catalog
from sim.cli import main
from sim.perf import report as rp
from sim.perf import report_plots, report_text
from sim.perf.calibrate import predictions, read_csv_measurements
from sim.perf.curves import LogGrid
from sim.perf.kernel import AllReduceCurve, AttentionCurve, Calibration, GemmCurve, KernelModel, shipped_calibrations

ROOT = Path(__file__).resolve().parent.parent
AIC = ROOT.parent / "shared" / "data" / "calibration" / "aiconfigurator"
needs_data = pytest.mark.skipif(not (AIC / "h100_sxm" / "vllm").is_dir() or not (AIC / "l40s" / "vllm").is_dir(),
                                reason="measured AIConfigurator tables not present (../shared is not checked out)")
CATALOG = load_catalog()


def fleetsim(*argv) -> tuple[int, str, str]:
    """Run ``fleetsim ARGV`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


# -- synthetic measurements from a known model -------------------------------------------------------------------

#: Parameters of the known model (round figures near the fitted H100 values; see sim/perf/kernel.py).
KNOWN = {"gemm": {"bf16": (0.8, 0.85, 2.5, 3e-6), "fp8": (0.55, 0.75, 2.0, 7e-6)},  # eff_c, eff_m, softness, floor
         "prefill": (0.4, 1.5e-5), "decode": (0.8, 1.2e-5), "allreduce": (5e-6, 0.6)}  # (eff, floor); (latency, eff)


def known_model(gpu: str) -> KernelModel:
    """A model whose times are exactly the parametric roofline form the fit starts from: the :data:`KNOWN`
    parameters with every correction surface zero (knot layout borrowed from the shipped calibration)."""
    ship = shipped_calibrations()[gpu]

    def zero(curve):
        knots = curve.correction.knots
        return LogGrid(knots, np.zeros(tuple(len(k) for k in knots)))

    gemm = {k: GemmCurve(*KNOWN["gemm"][k], zero(ship.gemm[k])) for k in ("bf16", "fp8")}
    prefill = {"bf16": AttentionCurve(*KNOWN["prefill"], zero(ship.attention_prefill["bf16"]))}
    decode = {"bf16": AttentionCurve(*KNOWN["decode"], zero(ship.attention_decode["bf16"]))}
    allreduce = {n: AllReduceCurve(*KNOWN["allreduce"], zero(ship.allreduce[n])) for n in (2, 8)}
    return KernelModel(CATALOG.gpus[gpu], Calibration(gpu, "known", gemm, prefill, decode, allreduce))


def synthetic_rows(km: KernelModel) -> pd.DataFrame:
    """A few dozen rows per operator (84 GEMM, 42 prefill, 40 decode, 18 all-reduce) timed by ``km``, spanning
    the floor-, memory- and compute-bound regimes so that every fitted parameter is pinned down."""
    rows = []
    shapes = [(4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336), (1024, 1024), (16384, 8192)]
    for dtype, ((n, k), m) in itertools.product(("bf16", "fp8"), itertools.product(shapes, (1, 4, 16, 64, 256, 1024,
                                                                                             4096))):
        rows.append({"op": "gemm", "m": m, "n": n, "k": k, "dtype": dtype, "latency_s": km.gemm_s(m, n, k, dtype)})
    for (h, kv), b, s in itertools.product([(32, 8), (64, 8)], (1, 2, 4), (128, 256, 512, 1024, 2048, 4096, 8192)):
        rows.append({"op": "prefill", "batch_size": b, "seq_len": s, "n_heads": h, "n_kv_heads": kv, "head_dim": 128,
                     "kv_dtype": "bf16", "latency_s": km.attention_prefill_s(b, s, h, kv, 128)})
    for (h, kv), b, n_kv in itertools.product([(32, 8), (64, 4)], (1, 4, 16, 64), (64, 256, 1024, 4096, 16384)):
        rows.append({"op": "decode", "batch_size": b, "kv_len": n_kv, "n_heads": h, "n_kv_heads": kv, "head_dim": 128,
                     "kv_dtype": "bf16", "latency_s": km.attention_decode_s(b, n_kv, h, kv, 128)})
    for n_gpus, e in itertools.product((2, 8), range(12, 30, 2)):
        rows.append({"op": "allreduce", "n_bytes": 2.0**e, "n_gpus": n_gpus,
                     "latency_s": km.allreduce_s(2.0**e, n_gpus)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, tuple[Path, Path, str]]:
    """``fleetsim calibrate --from csv`` on synthetic rows of each measured GPU, seed 3: (csv, yaml, stdout)."""
    folder = tmp_path_factory.mktemp("measurements")
    out = {}
    for gpu in ("h100_sxm", "l40s"):
        csv, yaml = folder / f"{gpu}.csv", folder / "calibrations" / f"{gpu}.yaml"
        synthetic_rows(known_model(gpu)).to_csv(csv, index=False)
        rc, stdout, err = fleetsim("calibrate", "--from", "csv", csv, "--gpu", gpu, "--out", yaml, "--seed", 3)
        assert (rc, err) == (0, "")
        out[gpu] = (csv, yaml, stdout)
    return out


@pytest.mark.parametrize("gpu", ["h100_sxm", "l40s"])
def test_calibrate_csv_round_trip_reproduces_the_known_model(gpu, fitted):
    csv, yaml, stdout = fitted[gpu]
    assert "held-out error (seed 3" in stdout
    assert f"calibration written to {yaml}" in stdout
    for family in ("gemm", "attention_prefill", "attention_decode", "allreduce"):
        assert family in stdout
    cal = Calibration.read(yaml)
    assert cal.gpu == gpu
    assert cal.fit_report["seed"] == 3
    # Every family has held-out rows (all-reduce: a random 20% of 9 rows per GPU count, so maybe not both).
    held = set(cal.fit_report["held_out"])
    assert {"gemm/bf16", "gemm/fp8", "attention_prefill/bf16", "attention_decode/bf16"} < held
    assert held <= {"gemm/bf16", "gemm/fp8", "attention_prefill/bf16", "attention_decode/bf16", "allreduce/2gpu",
                    "allreduce/8gpu"}
    # Every row, held out or not, is reproduced. The data are exactly of the model's parametric form (zero
    # corrections, and no row where the spec-sheet bound binds), so the fit recovers the parameters up to the
    # optimiser's stopping tolerance (observed APE < 1e-9) and the correction surfaces fit residuals of ~0. The
    # YAML stores correction values to 3-4 decimals of log time (error at most 5e-4). 1e-3 covers both.
    fitted_model = KernelModel.for_gpu(gpu, calibration_file=yaml)
    pred = predictions(fitted_model, read_csv_measurements(csv))
    assert len(pred) == 184
    assert pred["ape"].max() < 1e-3, pred.groupby(["family", "dtype"])["ape"].max()
    assert all(v["median_ape"] < 1e-3 and v["p90_ape"] < 1e-3 for v in cal.fit_report["held_out"].values())


# -- bad input -------------------------------------------------------------------------------------------------

GOOD_GEMM = "gemm,1,4096,4096,bf16,,,,,,,,,,1e-5"
CSV_HEADER = "op,m,n,k,dtype,batch_size,seq_len,kv_len,n_heads,n_kv_heads,head_dim,kv_dtype,n_bytes,n_gpus,latency_s"

BAD_CSVS = {
    "unknown op": ([GOOD_GEMM, "matmul,1,4096,4096,bf16,,,,,,,,,,1e-5"], ":3:", "op must be one of"),
    "negative latency": ([GOOD_GEMM, "gemm,2,4096,4096,bf16,,,,,,,,,,-1"], ":3:", "latency_s must be a positive"),
    "non-numeric m": ([GOOD_GEMM, "gemm,abc,4096,4096,bf16,,,,,,,,,,1e-5"], ":3:", "m must be a positive integer"),
    "fractional n": ([GOOD_GEMM, "gemm,2,4096.5,4096,bf16,,,,,,,,,,1e-5"], ":3:", "n must be a positive integer"),
    "unknown dtype": ([GOOD_GEMM, "gemm,2,4096,4096,int3,,,,,,,,,,1e-5"], ":3:", "dtype must be bf16 or fp8"),
    "missing dtype": ([GOOD_GEMM, "gemm,2,4096,4096,,,,,,,,,,,1e-5"], ":3:", "dtype must be bf16 or fp8"),
    "one-GPU all-reduce": ([GOOD_GEMM, "allreduce,,,,,,,,,,,,1024,1,1e-5"], ":3:", "n_gpus must be an integer >= 2"),
    "too few ops": ([GOOD_GEMM], "", "not enough measurements to fit"),
}


def _one_line_error(rc: int, stdout: str, err: str) -> str:
    assert rc == 2
    assert stdout == ""
    assert err.startswith("fleetsim: error: ")
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_calibrate_malformed_csv_exits_2_with_one_line(case, tmp_path):
    lines, where, message = BAD_CSVS[case]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([CSV_HEADER, *lines]) + "\n", encoding="utf-8")
    rc, out, err = fleetsim("calibrate", "--from", "csv", path, "--gpu", "h100_sxm", "--out", tmp_path / "c.yaml")
    err = _one_line_error(rc, out, err)
    assert f"{path}{where}" in err
    assert message in err
    assert not (tmp_path / "c.yaml").exists()


def test_calibrate_missing_or_empty_csv_exits_2(tmp_path):
    err = _one_line_error(*fleetsim("calibrate", "--from", "csv", tmp_path / "nope.csv", "--gpu", "l40s", "--out",
                                    tmp_path / "c.yaml"))
    assert "nope.csv" in err and "cannot read" in err
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    err = _one_line_error(*fleetsim("calibrate", "--from", "csv", tmp_path / "empty.csv", "--gpu", "l40s", "--out",
                                    tmp_path / "c.yaml"))
    assert "empty.csv" in err


@pytest.fixture
def fake_aic(tmp_path) -> Path:
    """An AIConfigurator-like folder with (empty) vllm/ folders for the two measured GPUs."""
    for gpu in ("h100_sxm", "l40s"):
        (tmp_path / "aic" / gpu / "vllm" / "0.24.0").mkdir(parents=True)
    return tmp_path / "aic"


@pytest.mark.parametrize(("argv", "message"), [
    (("--from", "aiconfigurator", "{missing}", "--gpu", "h100_sxm"), "folder not found"),
    (("--from", "aiconfigurator", "{aic}", "--gpu", "h100"), "unknown GPU 'h100' (did you mean 'h100_sxm'?); "
                                                             "allowed: h100_sxm, l40s"),
    (("--from", "aiconfigurator", "{aic}", "--gpu", "l4"), "no AIConfigurator vLLM tables for it"),
    (("--from", "aiconfigurator", "{aic}", "--gpu", "h100_sxm"), "missing table */gemm/gemm_perf.parquet"),
    (("--from", "aiconfigurator", "{empty}", "--gpu", "h100_sxm"), "no GPU folders with vllm/ tables"),
    (("--from", "csv", "{csv}", "--gpu", "rtx9090"), "unknown GPU 'rtx9090'"),
    (("--from", "parquet", "{csv}", "--gpu", "h100_sxm"), "unknown measurement source 'parquet'"),
])
def test_calibrate_bad_arguments_exit_2(argv, message, fake_aic, tmp_path):
    (tmp_path / "empty").mkdir()
    names = {"missing": tmp_path / "missing", "aic": fake_aic, "empty": tmp_path / "empty", "csv": tmp_path / "m.csv"}
    argv = [a.format(**names) for a in argv]
    err = _one_line_error(*fleetsim("calibrate", *argv, "--out", tmp_path / "c.yaml"))
    assert message in err
    if "unknown GPU" in message:
        assert "allowed:" in err


def test_perf_report_without_data_exits_2(tmp_path):
    err = _one_line_error(*fleetsim("perf-report", "--out", tmp_path / "r", "--data", tmp_path / "none"))
    assert "folder not found" in err and "--data" in err


# -- the report on synthetic tables (no ../shared needed) ------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic_report(fitted):
    """The report on the synthetic tables: held out by the calibrations ``fleetsim calibrate`` wrote (seed 3),
    transfer from the known models (exact all-rows fits of these rows), so that nothing is fitted twice."""
    tables = {gpu: read_csv_measurements(csv) for gpu, (csv, _, _) in fitted.items()}
    given = {gpu: Calibration.read(yaml) for gpu, (_, yaml, _) in fitted.items()}
    known = {gpu: known_model(gpu).calibration for gpu in fitted}
    return rp.build_report(tables, CATALOG, calibrations=given, data_label="synthetic", e2e=False,
                           transfer_calibrations=known)


def test_report_on_synthetic_tables(synthetic_report):
    rep = synthetic_report
    assert set(rep.held_out["gpu"]) == {"h100_sxm", "l40s"}
    assert {(m["model"], m["seed"]) for m in rep.meta["how"].values()} == {("given", 3)}
    assert rep.fit_check["matches"].all()  # the same split as the calibrations' fit_report
    assert rep.held_out_summary["median_ape"].max() < 1e-3
    # Serving range is a subset of the held-out rows.
    merged = rep.held_out_summary.merge(rep.held_out_serving_summary, on=["gpu", "family", "dtype"])
    assert (merged["rows_y"] <= merged["rows_x"]).all()
    assert set(zip(rep.transfer["source"], rep.transfer["target"], strict=True)) == {("h100_sxm", "l40s"),
                                                                                    ("l40s", "h100_sxm")}
    assert len(rep.transfer) == 2 * 184  # every row of each target
    assert set(rep.targets["scope"]) == {"held out", "transfer"}
    text = report_text.fidelity_markdown(rep, ["error_cdf.png"])
    for heading in ("## 1. Held-out error", "## 2. Held-out error, serving range only (a second view)",
                    "## 3. Cross-GPU spec transfer", "## 4. L4: spec transfer from the L40S, nothing measured",
                    "## 5. Targets", "## 6. End-to-end check", "Skipped on request", "![error_cdf.png]"):
        assert heading in text
    assert "**equal**" in text


def test_report_figures_are_one_per_gpu_and_direction(synthetic_report):
    figures = report_plots.report_figures(synthetic_report)
    assert set(figures) == {"predicted_vs_measured_h100_sxm.png", "predicted_vs_measured_l40s.png",
                            "transfer_h100_sxm_to_l40s.png", "transfer_l40s_to_h100_sxm.png", "error_cdf.png"}
    buf = io.BytesIO()
    figures["error_cdf.png"].savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_targets_verdicts_say_by_how_much():
    summary = pd.DataFrame({"gpu": ["g", "g"], "family": ["gemm", "allreduce"], "dtype": ["bf16", "2gpu"],
                            "rows": [10, 3], "median_ape": [0.07, 0.01], "p90_ape": [0.10, 0.2]})
    t = rp.targets_table(summary, (0.05, 0.15), "held out")
    assert t["verdict"].tolist() == ["missed: median 7.0% is 2.0 pp over 5.0%",
                                     "missed: p90 20.0% is 5.0 pp over 15.0%"]
    t = rp.targets_table(summary.assign(median_ape=0.01, p90_ape=0.02), (0.05, 0.15), "held out")
    assert t["verdict"].tolist() == ["met", "met"]


def test_l4_is_spec_transfer_from_l40s():
    table = rp.l4_table(CATALOG)
    # Bandwidth- or compute-bound operators scale close to the spec-sheet ratio; nothing is measured on an L4.
    assert np.allclose(table["l4_over_l40s"], table["spec_ratio"], rtol=0.15)


def test_e2e_section_says_why_when_the_check_fails(monkeypatch):
    from sim.perf import validation

    def broken(*args, **kwargs):
        raise OSError("rows unreadable")

    monkeypatch.setattr(validation, "load_rows", broken)
    e2e = rp.e2e_check()
    assert e2e.table is None
    assert "rows unreadable" in e2e.note
    assert report_text.e2e_markdown(e2e).startswith("_Skipped: `sim.perf.validation` failed (OSError")


def test_e2e_section_states_targets_and_error_groups():
    table = pd.DataFrame({
        "label": ["m/bf16/tp2/1024x128/c8", "m/bf16/tp4/1024x128/c8", "m/bf16/tp2/4096x128/c8"],
        "isl": [1024, 1024, 4096], "ttft_ms": [100.0, 100.0, 400.0], "pred_ttft_ms": [110.0, 130.0, 200.0],
        "tpot_ms": [10.0, 10.0, 20.0], "pred_tpot_ms": [10.5, 9.0, 21.0]})
    table["ttft_ape_pct"] = 100 * (table["pred_ttft_ms"] / table["ttft_ms"] - 1).abs()
    table["tpot_ape_pct"] = 100 * (table["pred_tpot_ms"] / table["tpot_ms"] - 1).abs()
    groups = rp.e2e_groups(table)
    assert groups[["model", "isl", "rows"]].values.tolist() == [["m/bf16", 1024, 2], ["m/bf16", 4096, 1]]
    np.testing.assert_allclose(groups["ttft_signed_median_pct"], [20.0, -50.0])
    summary = {"rows": 3, "ttft_median_ape_pct": 30.0, "ttft_p90_ape_pct": 46.0, "tpot_median_ape_pct": 5.0,
               "tpot_p90_ape_pct": 9.0}
    text = report_text.e2e_markdown(rp.EndToEnd(table, summary, ""))
    assert "target TTFT median APE <= 20%: **missed by 10.0 points**" in text
    assert "target TPOT median APE <= 10%: met" in text
    assert "| m/bf16 | 4096 | 1 | -50.0% | 50.0% | +5.0% |" in text


# -- the real tables -------------------------------------------------------------------------------------------

@needs_data
@pytest.mark.parametrize("gpu", ["h100_sxm", "l40s"])
def test_held_out_errors_equal_the_shipped_fit_report(gpu):
    tables = rp.load_measured(AIC, CATALOG, gpus=(gpu,))[gpu]
    cal = shipped_calibrations()[gpu]
    pred, _ = rp.held_out_predictions(tables, CATALOG.gpus[gpu], cal.fit_report["seed"], cal)
    check = rp.fit_report_check(rp.summarise(pred, ["family", "dtype"]), cal)
    assert len(check) == len(cal.fit_report["held_out"])
    assert check["matches"].all(), check.to_string()


@needs_data
@pytest.mark.slow
def test_perf_report_on_the_real_tables(tmp_path):
    out = tmp_path / "report"
    rc, stdout, err = fleetsim("perf-report", "--out", out, "--data", AIC, "--skip-e2e")
    assert rc == 0
    assert err.startswith("fleetsim: evaluating the kernel model on the measured tables") and err.count("\n") == 1
    assert "held-out numbers are equal to the shipped calibrations' fit_report" in stdout
    names = {p.name for p in out.iterdir()}
    assert names == {"fidelity.md", "predicted_vs_measured_h100_sxm.png", "predicted_vs_measured_l40s.png",
                     "transfer_h100_sxm_to_l40s.png", "transfer_l40s_to_h100_sxm.png", "error_cdf.png"}
    assert all((out / n).stat().st_size > 10_000 for n in names if n.endswith(".png"))
    text = (out / "fidelity.md").read_text(encoding="utf-8")
    for gpu in ("h100_sxm", "l40s"):
        assert f"- `{gpu}`: **equal** to the shipped calibration's `fit_report`" in text
        # The held-out rows of section 1 are the fit_report's, row for row.
        for key, v in shipped_calibrations()[gpu].fit_report["held_out"].items():
            family, dtype = key.split("/")
            assert f"| {gpu} | {family} | {dtype} | {v['held_out_rows']} |" in text

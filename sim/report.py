"""``fleetsim report``: a self-contained HTML report (and PNGs) of a results folder written by ``fleetsim run``.

Figures: latency CDFs per pool (and per class), replicas and cost per hour over time stacked by pool, SLO
attainment; the summary table. Images are embedded as base64 PNG, so the one file opens anywhere; every string
from the results (scenario, pool and class names) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import pandas as pd
import yaml

from sim.errors import FleetsimError
from sim.metrics.summary import pool_table
from sim.plots import (
    plot_cost_by_hour,
    plot_latency_cdf,
    plot_replicas_over_time,
    plot_slo_attainment,
)
from sim.results import read_table

REQUIRED = ("summary.json", "scenario.yaml", "cost_by_hour.parquet", "replicas.parquet")


class ReportError(FleetsimError):
    """A results folder that cannot be reported on (the message names the folder and the missing file)."""


def load_results(folder: str | Path) -> dict:
    """The tables and summary of a results folder (``requests`` from a file or a folder of parts)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"{folder}: is a file, not a results folder (write one with fleetsim run SCENARIO --out DIR)")
    if not folder.is_dir():
        raise ReportError(f"{folder}: results folder not found (write one with fleetsim run SCENARIO --out DIR)")
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    requests = folder / "requests.parquet" if (folder / "requests.parquet").exists() else folder / "requests"
    if not requests.exists():
        missing.append("requests.parquet")
    if missing:
        raise ReportError(f"{folder}: not a fleetsim results folder: missing {', '.join(missing)}")
    readers = {
        "summary": (folder / "summary.json", lambda p: json.loads(p.read_text(encoding="utf-8"))),
        "scenario": (folder / "scenario.yaml", lambda p: yaml.safe_load(p.read_text(encoding="utf-8"))),
        "requests": (requests, lambda p: read_table(folder, "requests")),
        "cost_by_hour": (folder / "cost_by_hour.parquet", pd.read_parquet),
        "replicas": (folder / "replicas.parquet", pd.read_parquet),
    }
    results = {}
    for key, (path, read) in readers.items():
        try:
            results[key] = read(path)
        except (ValueError, OSError, yaml.YAMLError) as err:  # JSONDecodeError and Arrow's errors are ValueErrors
            raise ReportError(f"{path}: cannot read the results: {err}") from None
    summary, scenario = results["summary"], results["scenario"]
    need = ("requests", "slo", "cost", "duration_s", "pools", "ttft_s", "tpot_s", "e2e_s", "throughput")
    if not isinstance(summary, dict) or any(k not in summary for k in need):
        missing = [k for k in need if not isinstance(summary, dict) or k not in summary]
        raise ReportError(f"{folder}/summary.json: not a fleetsim run summary (missing {', '.join(missing)})")
    if not isinstance(scenario, dict):
        raise ReportError(f"{folder}/scenario.yaml: not a scenario mapping")
    return results


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def figures(results: dict) -> dict[str, bytes]:
    """The report's figures as PNG bytes, by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    req = results["requests"]
    out = {}
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for metric, ax in zip(("ttft_s", "tpot_s", "e2e_s"), axes, strict=True):
        plot_latency_cdf(req, metric, ax=ax)
    out["latency_by_pool.png"] = _png(fig)
    if req["class"].nunique() > 1:
        fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
        for metric, ax in zip(("ttft_s", "tpot_s", "e2e_s"), axes, strict=True):
            plot_latency_cdf(req, metric, by="class", ax=ax)
        out["latency_by_class.png"] = _png(fig)
    fig, axes = plt.subplots(1, 2, figsize=(14, 3.6))
    order = list(results["summary"].get("pools", {}))
    plot_replicas_over_time(results["replicas"], order=order, ax=axes[0])
    plot_cost_by_hour(results["cost_by_hour"], order=order, ax=axes[1])
    out["replicas_and_cost.png"] = _png(fig)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * (len(results["summary"].get("pools", {})) + 2)))
    plot_slo_attainment(results["summary"], ax=ax)
    out["slo_attainment.png"] = _png(fig)
    return out


def render_html(results: dict, images: dict[str, bytes]) -> str:
    """The report as one HTML document (images inline)."""
    from sim.cli import slo_text

    s = results["summary"]
    esc = html.escape
    name = str(results["scenario"].get("name", "scenario"))
    table = pool_table(s)
    table["pool"] = table["pool"].astype(str)
    req = s["requests"]
    cost = s["cost"]
    facts = [
        ("simulated", f"{s['duration_s']:,.1f} s, seed {s.get('seed', results['scenario'].get('seed'))}"),
        ("requests", f"{req['arrived']:,} arrived, {req['finished']:,} finished, {req['rejected']:,} rejected, "
                     f"{req['in_flight']:,} in flight"),
        ("cost", f"${cost['usd_total']:,.4f} total, ${cost['usd_per_hour'] or 0:,.2f}/h, "
                 f"${cost['usd_per_million_output_tokens'] or float('nan'):,.3f} per million output tokens"),
        ("SLO", slo_text(s["slo"]["targets"]) or "none"),
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>fleetsim report: {esc(name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>fleetsim report: {esc(name)}</h1>",
        "<ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in facts) + "</ul>",
        "<h2>Summary per pool</h2>",
        table.to_html(index=False, float_format=lambda x: f"{x:,.4g}", na_rep="-", escape=True),
    ]
    titles = {"latency_by_pool.png": "Latency per pool", "latency_by_class.png": "Latency per traffic class",
              "replicas_and_cost.png": "Replicas and cost over time", "slo_attainment.png": "SLO attainment"}
    for file, data in images.items():
        encoded = base64.b64encode(data).decode("ascii")
        parts += [f"<h2>{esc(titles.get(file, file))}</h2>",
                  f'<img alt="{esc(titles.get(file, file))}" src="data:image/png;base64,{encoded}">']
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folder: str | Path | dict, html_path: str | Path, png_dir: str | Path | None = None) -> list[Path]:
    """Write the HTML report of ``folder`` (a results folder, or what :func:`load_results` read from one) to
    ``html_path`` (and the PNGs to ``png_dir``); return what was written."""
    results = folder if isinstance(folder, dict) else load_results(folder)
    images = figures(results)
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(results, images), encoding="utf-8")
    written = [html_path]
    if png_dir is not None:
        png_dir = Path(png_dir)
        png_dir.mkdir(parents=True, exist_ok=True)
        for file, data in images.items():
            (png_dir / file).write_bytes(data)
            written.append(png_dir / file)
    return written

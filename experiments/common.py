"""What the rate-sweep experiment scripts share: their command line and how they print and save a table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def sweep_parser(doc: str, rates: list[float], requests: int) -> argparse.ArgumentParser:
    """A parser with ``--rates``, ``--requests`` and ``--out`` (a script adds its own options)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=rates, help="arrival rates (requests/s)")
    parser.add_argument("--requests", type=int, default=requests, help="requests per run")
    parser.add_argument("--out", type=Path, default=None, help="folder for the CSV (default: print only)")
    return parser


def emit(table: pd.DataFrame, out: Path | None, file_name: str) -> None:
    """Print ``table``; with ``out``, also write it there as ``file_name``."""
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / file_name, index=False)

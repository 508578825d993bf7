"""Readers of trace formats beyond Azure's: Mooncake JSONL, BurstGPT CSV, and generic CSV or Parquet with named
columns. Each checks every row and raises :class:`~sim.errors.TraceError` naming the file and the 1-based line
(the row number for Parquet) of the first bad one; arrival times are re-based to start at 0.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from sim.errors import TraceError, as_written
from sim.workload.traces import (
    TraceArrays,
    check_sorted,
    csv_header,
    first_undecodable_line,
    positive_int,
    reading,
    to_arrays,
)

#: Time units of a generic trace's arrival column, in seconds.
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _float(value, path: str, line: int, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TraceError(path, line, f"{column} must be a number, got {as_written(value)}") from None
    if not np.isfinite(number) or number < 0:
        raise TraceError(path, line, f"{column} must be a finite number >= 0, got {as_written(value)}")
    return number


def read_mooncake(path: str | Path) -> TraceArrays:
    """Mooncake (FAST'25) JSONL: ``{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}``.

    ``hash_ids`` (512-token prefix blocks) are kept as each request's prefix blocks. The conversation trace's
    timestamps are bucketed at about 3 s; :func:`sim.workload.source.trace_arrays` can spread them
    (``spread_s``).
    """
    path = str(path)
    times, prompts, outputs, prefixes = [], [], [], []
    previous = None
    with reading(path), open(path, encoding="utf-8-sig") as handle:  # a byte-order mark is not part of the JSON
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise TraceError(path, line, f"not valid JSON: {err.msg}") from None
            if not isinstance(row, dict):
                raise TraceError(path, line, f"expected a JSON object, got {type(row).__name__}")
            for key in ("timestamp", "input_length", "output_length"):
                if key not in row:
                    raise TraceError(path, line, f"missing {key!r} (expected timestamp, input_length, "
                                     "output_length, hash_ids)")
            stamp = _float(row["timestamp"], path, line, "timestamp") / 1000
            check_sorted(path, line, stamp, previous, "timestamp")
            previous = stamp
            times.append(stamp)
            prompts.append(positive_int(row["input_length"], path, line, "input_length", 1))
            outputs.append(positive_int(row["output_length"], path, line, "output_length", 1))
            ids = row.get("hash_ids", [])
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise TraceError(path, line, "hash_ids must be a list of integers")
            prefixes.append(tuple(ids))
    return to_arrays(path, times, prompts, outputs, prefixes)


BURSTGPT_COLUMNS = ("Timestamp", "Session ID", "Elapsed time", "Model", "Request tokens", "Response tokens",
                    "Total tokens", "Log Type")


def read_burstgpt(path: str | Path) -> TraceArrays:
    """BurstGPT (KDD'25) CSV: ``Timestamp`` (s), ``Request tokens``, ``Response tokens`` and the other columns.

    Rows with 0 response tokens are failed requests in the files "with fails": they are left out (the
    ``without_fails`` files have none). Rows must be sorted by Timestamp.
    """
    path = str(path)
    times, prompts, outputs = [], [], []
    previous = None
    with reading(path), open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = csv_header(reader, path, BURSTGPT_COLUMNS)
        missing = [c for c in ("Timestamp", "Request tokens", "Response tokens") if c not in header]
        if missing:
            raise TraceError(path, 1, f"header lacks {', '.join(missing)}; expected {','.join(BURSTGPT_COLUMNS)}")
        at = {c: header.index(c) for c in ("Timestamp", "Request tokens", "Response tokens")}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise TraceError(path, line, f"expected {len(header)} fields, got {len(row)}")
            stamp = _float(row[at["Timestamp"]], path, line, "Timestamp")
            check_sorted(path, line, stamp, previous, "Timestamp")
            previous = stamp
            out = positive_int(row[at["Response tokens"]], path, line, "Response tokens", 0)
            prompt = positive_int(row[at["Request tokens"]], path, line, "Request tokens", 0)
            if out == 0:
                continue  # a failed request
            times.append(stamp)
            prompts.append(max(prompt, 1))
            outputs.append(out)
    return to_arrays(path, times, prompts, outputs)


def read_table(path: str | Path, columns: dict[str, str], time_unit: str = "s") -> TraceArrays:
    """A generic CSV or Parquet trace: ``columns`` maps ``arrival``, ``prompt_tokens`` and ``output_tokens`` to the
    file's column names; arrivals in ``time_unit`` (s, ms, us, ns) from any origin, sorted."""
    import pandas as pd

    path = str(path)
    try:
        if path.endswith(".parquet"):
            frame = pd.read_parquet(path)
            first_line = 0  # rows are numbered from 0 in a Parquet file
        else:
            frame = pd.read_csv(path)
            first_line = 2  # the header is line 1
    except FileNotFoundError:
        raise TraceError(path, 0, "file not found") from None
    except UnicodeDecodeError as err:
        raise TraceError(path, first_undecodable_line(path), f"not UTF-8 text ({err.reason})") from None
    except pd.errors.EmptyDataError:
        raise TraceError(path, 0, "empty file; expected a header naming the columns "
                         f"{', '.join(columns.values())}") from None
    except (ValueError, OSError, pd.errors.ParserError) as err:
        ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if ragged:
            raise TraceError(path, int(ragged[2]), f"expected {ragged[1]} fields, got {ragged[3]}") from None
        raise TraceError(path, 0, f"cannot read as {'Parquet' if path.endswith('.parquet') else 'CSV'}: "
                         f"{str(err).splitlines()[0]}") from None
    missing = [name for name in columns.values() if name not in frame.columns]
    if missing:
        raise TraceError(path, 1, f"no column {', '.join(map(repr, missing))}; the file has "
                         f"{', '.join(map(str, frame.columns))}")
    scale = TIME_UNITS[time_unit]
    times, prompts, outputs = [], [], []
    previous = None
    for i, (t, p, o) in enumerate(zip(frame[columns["arrival"]], frame[columns["prompt_tokens"]],
                                      frame[columns["output_tokens"]], strict=True)):
        line = first_line + i
        for name, value in zip((columns["arrival"], columns["prompt_tokens"], columns["output_tokens"]), (t, p, o),
                               strict=True):
            if value is None or (isinstance(value, float) and np.isnan(value)):
                raise TraceError(path, line, f"{name} is empty")
        stamp = _float(t, path, line, columns["arrival"]) * scale
        check_sorted(path, line, stamp, previous, columns["arrival"])
        previous = stamp
        times.append(stamp)
        prompts.append(positive_int(p, path, line, columns["prompt_tokens"], 1))
        outputs.append(positive_int(o, path, line, columns["output_tokens"], 1))
    return to_arrays(path, times, prompts, outputs)

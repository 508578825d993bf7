"""Readers of trace formats beyond Azure's: Mooncake JSONL, BurstGPT CSV, and generic CSV or Parquet with named
columns. Each checks every row and raises :class:`~sim.errors.TraceError` naming the file and the 1-based line
(the 1-based row number for Parquet) of the first bad one; arrival times are re-based to start at 0.
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
    plain,
    positive_int,
    reading,
    to_arrays,
)

#: Time units of a generic trace's arrival column, in seconds.
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _float(value, path: str, line: int, column: str) -> float:
    value = plain(value)
    try:
        if isinstance(value, bool):  # float(True) is 1.0: a JSON true is not a time
            raise TypeError
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


def _csv_line(path: str, record: int) -> int | None:
    """The 1-based line on which CSV record ``record`` starts (0: the header), counting the blank and whitespace-only
    lines pandas skips and the lines a quoted field spans; None if the file cannot be read so."""
    start = 0  # the line the previous record ended on
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if row and (len(row) > 1 or row[0].strip()):
                    if record == 0:
                        return start + 1
                    record -= 1
                start = reader.line_num
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    return None


def read_table(path: str | Path, columns: dict[str, str], time_unit: str = "s") -> TraceArrays:
    """A generic CSV or Parquet trace: ``columns`` maps ``arrival``, ``prompt_tokens`` and ``output_tokens`` to the
    file's column names; arrivals in ``time_unit`` (s, ms, us, ns) from any origin, sorted. A bad row is named by
    its line in a CSV file, by its row number (from 1) in a Parquet one."""
    import pandas as pd

    path = str(path)
    parquet = path.endswith(".parquet")
    try:
        frame = pd.read_parquet(path) if parquet else pd.read_csv(path)
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
        raise TraceError(path, 0, f"cannot read as {'Parquet' if parquet else 'CSV'}: "
                         f"{str(err).splitlines()[0]}") from None
    if not parquet:  # pandas renames a repeated header name (t, t.1): the first would be read, silently
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: as pandas, a BOM is not in a name
            names = next(csv.reader(line for line in handle if line.strip()), [])
        twice = sorted({n for n in names if names.count(n) > 1} & set(columns.values()))
        if twice:
            raise TraceError(path, _csv_line(path, 0) or 1, f"column {twice[0]!r} is named more than once in the "
                             "header; rename one")
    missing = [name for name in columns.values() if name not in frame.columns]
    if missing:
        header = 0 if parquet else _csv_line(path, 0) or 1  # Parquet has no header line: the whole file
        raise TraceError(path, header, f"no column {', '.join(map(repr, missing))}; the file has "
                         f"{', '.join(map(str, frame.columns))}")
    names = (columns["arrival"], columns["prompt_tokens"], columns["output_tokens"])
    scale = TIME_UNITS[time_unit]

    def row(line: int, values: tuple, previous: float | None) -> tuple[float, int, int]:
        """One row, checked: (arrival in s, prompt tokens, output tokens)."""
        for name, value in zip(names, values, strict=True):
            if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):  # pd.NA: an empty
                raise TraceError(path, line, f"{name} is empty")
        stamp = _float(values[0], path, line, names[0]) * scale
        check_sorted(path, line, stamp, previous, names[0])
        return stamp, positive_int(values[1], path, line, names[1], 1), positive_int(values[2], path, line, names[2], 1)

    times, prompts, outputs = [], [], []
    previous = None
    for i, values in enumerate(zip(*(frame[name] for name in names), strict=True)):
        # Parquet rows count from 1 (0 would read as the whole file). A CSV row's line is i + 2 (after the header)
        # unless pandas skipped blank lines before it: only a bad row, rare, pays for finding its true line.
        line = i + 1 if parquet else i + 2
        try:
            stamp, prompt, output = row(line, values, previous)
        except TraceError:
            true_line = None if parquet else _csv_line(path, i + 1)
            if true_line is not None and true_line != line:
                row(true_line, values, previous)  # the same error, at the file's own line
            raise
        previous = stamp
        times.append(stamp)
        prompts.append(prompt)
        outputs.append(output)
    return to_arrays(path, times, prompts, outputs)

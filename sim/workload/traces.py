"""Readers of request traces into arrays of (arrival_s, prompt_tokens, output_tokens).

A reader checks every row and raises :class:`~sim.errors.TraceError` naming the file and the 1-based line of
the first bad row. Arrival times are re-based so that the first request arrives at 0 s.
"""

from __future__ import annotations

import csv
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from sim.errors import TraceError, as_written
from sim.limits import MAX_TOKENS


@dataclass(frozen=True, slots=True)
class TraceArrays:
    """A trace as columns; ``arrival_s`` is sorted and starts at 0; ``prefix_blocks``, where the format has them
    (Mooncake ``hash_ids``), the ids of each request's prefix blocks."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_blocks: tuple[tuple[int, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self.arrival_s)

    def take(self, idx: np.ndarray) -> TraceArrays:
        """The requests at ``idx`` (in that order)."""
        blocks = None if self.prefix_blocks is None else tuple(self.prefix_blocks[i] for i in idx)
        return TraceArrays(self.arrival_s[idx], self.prompt_tokens[idx], self.output_tokens[idx], blocks)


def first_undecodable_line(path: str) -> int:
    """1-based number of the first line that is not valid UTF-8 (0 if none is found)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def plain(value):
    """``value`` as a Python scalar: a NumPy one (a Parquet or nullable pandas column's ``np.int64(5)``) as its
    Python value, so that it is checked, and shown in a message, as the number it is."""
    return value.item() if isinstance(value, np.generic) else value


def positive_int(value, path: str, line: int, column: str, minimum: int) -> int:
    """An integer field of a trace row (text, or a whole number from JSON or Parquet), at least ``minimum``."""
    value = plain(value)  # np.bool_ becomes bool, refused below as any boolean is
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TraceError(path, line, f"{column} must be an integer, got {as_written(value)}")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except ValueError:
        number = None
    if number is None:
        raise TraceError(path, line, f"{column} must be an integer, got {as_written(value)}")
    if number < minimum:
        raise TraceError(path, line, f"{column} must be >= {minimum}, got {number}")
    if number > MAX_TOKENS:
        raise TraceError(path, line, f"{column} must be at most {MAX_TOKENS:,} tokens (no model's context is longer), "
                         f"got {number}")
    return number


def check_sorted(path: str, line: int, stamp: float, previous: float | None, column: str) -> None:
    if previous is not None and stamp < previous:
        raise TraceError(path, line, f"{column} goes backwards; the trace must be sorted by time")


@contextmanager
def reading(path: str):
    """Turn a missing file, bad UTF-8 or malformed CSV met while reading ``path`` into a :class:`TraceError`."""
    try:
        yield
    except FileNotFoundError:
        raise TraceError(path, 0, "file not found") from None
    except IsADirectoryError:
        raise TraceError(path, 0, "is a folder, expected a file") from None
    except UnicodeDecodeError as err:
        raise TraceError(path, first_undecodable_line(path), f"not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise TraceError(path, 0, f"malformed CSV: {err}") from None


def csv_header(reader, path: str, expected: tuple[str, ...]) -> list[str]:
    """The header row of a trace CSV (a byte-order mark and spaces stripped); an empty file is an error."""
    header = next(reader, None)
    if header is None:
        raise TraceError(path, 0, "empty file; expected header " + ",".join(expected))
    return [h.strip().lstrip("\ufeff") for h in header]


def to_arrays(path: str, times: list[float], prompts: list[int], outputs: list[int],
              prefixes: list[tuple[int, ...]] | None = None) -> TraceArrays:
    """The rows read, as columns re-based to start at 0 (an empty trace is an error)."""
    if not times:
        raise TraceError(path, 0, "no requests in trace")
    arrival = np.asarray(times, dtype=float)
    return TraceArrays(arrival - arrival[0], np.asarray(prompts, dtype=np.int64), np.asarray(outputs, dtype=np.int64),
                       tuple(prefixes) if prefixes is not None else None)


def read_azure_csv(path: str | Path) -> TraceArrays:
    """Read an Azure LLM inference trace (2023 format): ``TIMESTAMP,ContextTokens,GeneratedTokens``.

    TIMESTAMP is a wall-clock time (``2023-11-16 18:15:46.6805900``; a UTC offset is accepted). Rows must be in
    time order. A row with 0 generated tokens is an error: the engine model needs at least one output token
    (the 2023 conv and code traces have none).
    """
    path = str(path)
    times, prompts, outputs = [], [], []
    with reading(path), open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = csv_header(reader, path, AZURE_COLUMNS)
        if tuple(header[:3]) != AZURE_COLUMNS:
            raise TraceError(path, 1, f"expected header {','.join(AZURE_COLUMNS)}, got {','.join(header)}")
        previous = origin = None
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 3:
                raise TraceError(path, line, f"expected 3 fields, got {len(row)}")
            try:
                when = datetime.fromisoformat(row[0].strip())
            except ValueError:
                raise TraceError(path, line, f"TIMESTAMP is not a date-time: {row[0]!r}") from None
            # Naive stamps are read as UTC: the local time zone (and its DST) must not move arrivals. Seconds
            # are counted from the first stamp exactly (a float of the Unix time would lose microseconds).
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            origin = origin or when
            stamp = (when - origin).total_seconds()
            check_sorted(path, line, stamp, previous, "TIMESTAMP")
            previous = stamp
            times.append(stamp)
            prompts.append(positive_int(row[1], path, line, "ContextTokens", 1))
            outputs.append(positive_int(row[2], path, line, "GeneratedTokens", 1))
    return to_arrays(path, times, prompts, outputs)


def _readers() -> dict:
    from sim.workload.readers import read_burstgpt, read_mooncake, read_table

    return {"azure": read_azure_csv, "mooncake": read_mooncake, "burstgpt": read_burstgpt, "csv": read_table,
            "parquet": read_table}


@lru_cache(maxsize=8)
def _read_cached(fmt: str, path: str, mtime_ns: int, size: int, options: tuple) -> TraceArrays:
    kwargs = dict(options)
    if "columns" in kwargs:
        kwargs["columns"] = dict(kwargs["columns"])
    arrays = _readers()[fmt](path, **kwargs)
    for column in (arrays.arrival_s, arrays.prompt_tokens, arrays.output_tokens):
        column.flags.writeable = False  # shared between runs: nobody may change it
    return arrays


def read_trace(fmt: str, path: str | Path, **options) -> TraceArrays:
    """Read a trace in format ``fmt`` once per file version (cached on path, modification time, size and the
    reader's ``options``: ``columns`` and ``time_unit`` for csv and parquet)."""
    path = str(path)
    try:
        stat = Path(path).stat()
    except FileNotFoundError:
        raise TraceError(path, 0, "file not found") from None
    key = tuple(sorted((k, tuple(sorted(v.items())) if isinstance(v, dict) else v) for k, v in options.items()))
    return _read_cached(fmt, path, stat.st_mtime_ns, stat.st_size, key)

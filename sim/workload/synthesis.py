"""Synthetic traffic shaped like real traffic: window-by-window renewal arrivals at a given rate and burstiness.

- :func:`fit_trace`: from a trace, each window's rate and inter-arrival CV, and the trace's (prompt, output) pairs.
- :func:`read_servegen`: ServeGen's per-client windows (``window_start_s, rate, cv, dist, p1, p2``, 600-s windows)
  and per-client length PMFs per 6-hour window (reference ``hardware-and-traces.md``, Table A1 and notes).
- :func:`renewal_arrivals`: arrivals of one source across windows: within each window, Gamma-distributed gaps
  with the window's mean rate and CV (a Poisson process at CV 1; bursts above). ServeGen's fitted distribution
  parameters (``dist, p1, p2``) are not used: only its rate and CV.
"""

from __future__ import annotations

import ast
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import TraceError
from sim.limits import MAX_TOKENS
from sim.workload.traces import TraceArrays, reading


@dataclass(frozen=True, slots=True)
class Windows:
    """One source's traffic by window: start times, mean rates (req/s) and inter-arrival CVs; with ``end_s``, no
    traffic from then on (a fitted trace's last window is cut at its last request)."""

    start_s: np.ndarray
    rate_per_s: np.ndarray
    cv: np.ndarray
    window_s: float
    end_s: float | None = None

    def span(self, start: float) -> float:
        """How long the window from ``start`` lasts: ``window_s``, or less where ``end_s`` cuts it."""
        return self.window_s if self.end_s is None else max(0.0, min(self.window_s, self.end_s - start))


def renewal_arrivals(w: Windows, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Arrival times of a renewal process whose rate (times ``scale``) and CV change window by window."""
    out = []
    for start, rate, cv in zip(w.start_s, w.rate_per_s * scale, w.cv, strict=True):
        # A rate is per second of the window's own span: the last window of a fitted trace ends at its last request.
        span = w.span(start)
        if rate <= 0 or span <= 0:
            continue
        end = start + span
        cv = cv if np.isfinite(cv) and cv > 0 else 1.0
        shape = 1.0 / cv**2
        n = max(8, int(rate * span * 1.5) + 8)
        t = start + rng.uniform(0, 1 / rate)  # no arrival pinned to the window's start
        times = []
        while t < end:
            gaps = rng.gamma(shape, 1.0 / (shape * rate), n)
            steps = t + np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
            keep = steps[steps < end]
            times.append(keep)
            if len(keep) < n:
                break
            t = steps[-1] + gaps[-1]
        out.append(np.concatenate(times) if times else np.empty(0))
    return np.sort(np.concatenate(out)) if out else np.empty(0)


def expected_arrivals(w: Windows, start_s: float, end_s: float) -> float:
    """The mean number of arrivals of ``w`` in ``[start_s, end_s)`` (each window's rate times its overlap)."""
    end_s = end_s if w.end_s is None else min(end_s, w.end_s)
    overlap = np.clip(np.minimum(w.start_s + w.window_s, end_s) - np.maximum(w.start_s, start_s), 0, None)
    return float(np.sum(w.rate_per_s * overlap))


def fit_trace(arrays: TraceArrays, window_s: float) -> Windows:
    """Each ``window_s`` window's arrival rate and the CV of its inter-arrival gaps (1 where too few to tell).

    The windows cover the trace's span, ``[0, last arrival]``, and no more: the last one ends at the last request
    (which it holds), its rate is over that part, and no traffic is made after it. A trace whose requests all
    arrive at one instant has no span to fit: no traffic (the caller says so).
    """
    end = float(arrays.arrival_s[-1]) if len(arrays) else 0.0
    starts = np.arange(0.0, end, window_s) if end > 0 else np.zeros(1)
    if end > 0:  # arange's last start can round to the end itself (3 * 0.1): a window of no length
        starts = starts[starts < end]
    rates, cvs = [], []
    for i, start in enumerate(starts):
        last = i == len(starts) - 1
        inside = arrays.arrival_s[(arrays.arrival_s >= start) & (last | (arrays.arrival_s < start + window_s))]
        span = min(window_s, end - start)
        rates.append(len(inside) / span if span > 0 else 0.0)
        gaps = np.diff(inside)
        cvs.append(float(gaps.std() / gaps.mean()) if len(gaps) >= 3 and gaps.mean() > 0 else 1.0)
    return Windows(starts, np.asarray(rates), np.asarray(cvs), window_s, end_s=end)


@dataclass(frozen=True, slots=True)
class ServeGenClient:
    """One ServeGen client: its windows and, per 6-hour window start, its input and output length PMFs."""

    client: str
    windows: Windows
    lengths: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # start -> (in, p_in, out, p_out)

    def sample_lengths(self, times: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        starts = np.asarray(sorted(self.lengths))
        prompts, outputs = np.empty(len(times), np.int64), np.empty(len(times), np.int64)
        which = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(starts) - 1)
        for k, start in enumerate(starts):
            idx = np.flatnonzero(which == k)
            values_in, p_in, values_out, p_out = self.lengths[float(start)]
            prompts[idx] = rng.choice(values_in, len(idx), p=p_in)
            outputs[idx] = rng.choice(values_out, len(idx), p=p_out)
        return np.maximum(prompts, 1), np.maximum(outputs, 1)


def _pmf(text: str, path: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = ast.literal_eval(text) if isinstance(text, str) else text
        tokens = [int(k) for k in table]
        probs = np.asarray([float(v) for v in table.values()], dtype=float)
    except (ValueError, SyntaxError, TypeError, AttributeError, MemoryError, RecursionError):
        raise TraceError(path, 0, f"{what} is not a {{tokens: probability}} table") from None
    bad = [t for t in tokens if not 0 <= t <= MAX_TOKENS]
    if bad:
        raise TraceError(path, 0, f"{what}: token count {bad[0]} is outside 0-{MAX_TOKENS:,}")
    if len(tokens) == 0 or not np.isfinite(probs).all() or (probs < 0).any() or probs.sum() <= 0:
        raise TraceError(path, 0, f"{what} has no positive probability")
    return np.asarray(tokens, dtype=np.int64), probs / probs.sum()


def _dataset(path: Path) -> dict:
    """A client's ``-dataset.json``: window start (s) -> its length tables, checked."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise TraceError(str(path), 0, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise TraceError(str(path), err.lineno, f"not valid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise TraceError(str(path), 0, f"expected a JSON object of windows (start s -> length tables), got "
                         f"{type(data).__name__}")
    out = {}
    for key, window in data.items():
        try:
            start = float(key)
        except ValueError:
            raise TraceError(str(path), 0, f"window {key!r}: the key must be the window's start in seconds") from None
        if not isinstance(window, dict):
            raise TraceError(str(path), 0, f"window {key}: expected an object with input_tokens and output_tokens, "
                             f"got {type(window).__name__}")
        out[start] = window
    return out


def read_servegen(folder: str | Path, clients: list[str] | None = None) -> list[ServeGenClient]:
    """The ServeGen clients in ``folder`` (``chunk-<id>-trace.csv`` with ``chunk-<id>-dataset.json``), all or the
    listed ids. A client without a dataset file is an error (its lengths would be unknown)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TraceError(str(folder), 0, "not a folder of ServeGen chunk-<client>-trace.csv files")
    found = sorted(p.name[len("chunk-"):-len("-trace.csv")] for p in folder.glob("chunk-*-trace.csv"))
    if not found:
        raise TraceError(str(folder), 0, "no ServeGen chunk-<client>-trace.csv files in it")
    wanted = found if clients is None else [str(c) for c in clients]
    missing = [c for c in wanted if c not in found]
    if missing:
        raise TraceError(str(folder), 0, f"no client {', '.join(missing)}; the folder has {', '.join(found)}")
    out = []
    for client in wanted:
        trace = folder / f"chunk-{client}-trace.csv"
        starts, rates, cvs = [], [], []
        with reading(str(trace)), open(trace, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                if not row:
                    continue
                if len(row) != 6:
                    raise TraceError(str(trace), line, f"expected 6 fields (window_start_s, rate, cv, dist, p1, p2), "
                                     f"got {len(row)}")
                try:
                    start, rate = float(row[0]), float(row[1])
                    cv = float(row[2]) if row[2] else 1.0
                except ValueError:
                    raise TraceError(str(trace), line,
                                     f"window start, rate and cv must be numbers: {row[:3]}") from None
                if not all(np.isfinite((start, rate, cv))) or start < 0 or rate < 0 or cv < 0:
                    raise TraceError(str(trace), line, f"window start, rate and cv must be finite and >= 0, got "
                                     f"{row[0]}, {row[1]}, {row[2]}")
                if 0 < cv < 1e-3 or cv > 100:
                    raise TraceError(str(trace), line, f"cv must be 0 (unknown), or 0.001 to 100, got {cv:g}")
                if starts and start <= starts[-1]:
                    raise TraceError(str(trace), line, f"window start {start:g} s is not after the previous one "
                                     f"({starts[-1]:g} s); windows must be in time order")
                starts.append(start)
                rates.append(rate)
                cvs.append(cv)
        if not starts:
            raise TraceError(str(trace), 0, "no windows")
        window_s = float(np.median(np.diff(starts))) if len(starts) > 1 else 600.0
        dataset = folder / f"chunk-{client}-dataset.json"
        if not dataset.is_file():
            raise TraceError(str(dataset), 0,
                             "file not found (a client's lengths come from its dataset file, next to its trace file)")
        data = _dataset(dataset)
        # A window without traffic has empty tables: its requests (if rates say there are any) take the lengths of
        # the nearest earlier window that has some (the first one, before any).
        lengths = {k: (*_pmf(v["input_tokens"], str(dataset), f"window {k:g} input_tokens"),
                       *_pmf(v.get("output_tokens"), str(dataset), f"window {k:g} output_tokens"))
                   for k, v in data.items() if v.get("input_tokens") not in ("{}", {}, None)}
        if not lengths:
            raise TraceError(str(dataset), 0, "no window has length tables")
        out.append(ServeGenClient(client, Windows(np.asarray(starts), np.asarray(rates), np.asarray(cvs), window_s),
                                  lengths))
    return out

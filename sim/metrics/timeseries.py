"""Time-varying pool state as a change-point log, summarised with time weighting.

A row ``(time_s, pool, running, waiting, kv_used_blocks, busy_replicas, kv_total_blocks, kv_utilization)`` is
written whenever a pool's running or waiting count, its number of busy replicas or its KV capacity (the ready
replicas' blocks) changes; KV usage is sampled at those instants (admissions, completions, arrivals), not at
every step. Each value holds until the next row of the same pool.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.metrics.store import RowStore

COLUMNS = ["time_s", "pool", "running", "waiting", "kv_used_blocks", "busy_replicas", "kv_total_blocks"]


#: Change points are turned into a table this many at a time (see :class:`sim.metrics.store.RowStore`).
ROW_CHUNK = 200_000


class PoolMonitor:
    """Aggregates per-replica state into per-pool change points.

    Rows are kept as tuples until :data:`ROW_CHUNK` accumulate, then the rows before the current instant (which
    can no longer be coalesced) become a table chunk in ``store`` (which spills to disk past its threshold).
    """

    def __init__(self, pools: list[str] | None = None, store: RowStore | None = None) -> None:
        self.pools = list(pools or [])
        self._replica: dict[int, tuple[int, int, int, bool]] = {}
        self._pool: dict[str, list[int]] = {}
        self.rows: list[tuple] = []
        self._last_row_index: dict[str, int] = {}
        self.store = store if store is not None else RowStore()

    def update(self, now_s: float, pool: str, replica_id: int, running: int, waiting: int, kv_used: int,
               busy: bool) -> None:
        old = self._replica.get(replica_id, (0, 0, 0, False))
        new = (running, waiting, kv_used, busy)
        if old == new:
            return
        self._replica[replica_id] = new
        agg = self._pool.setdefault(pool, [0, 0, 0, 0, 0])
        agg[0] += running - old[0]
        agg[1] += waiting - old[1]
        agg[2] += kv_used - old[2]
        agg[3] += int(busy) - int(old[3])
        if (running, waiting, busy) == (old[0], old[1], old[3]):
            return  # only KV usage moved: sampled at the next structural change
        self._row(now_s, pool, agg)

    def capacity(self, now_s: float, pool: str, delta_blocks: int) -> None:
        """A replica of ``pool`` became ready (``delta_blocks`` > 0) or stopped taking requests (< 0)."""
        agg = self._pool.setdefault(pool, [0, 0, 0, 0, 0])
        agg[4] += delta_blocks
        self._row(now_s, pool, agg)

    def _row(self, now_s: float, pool: str, agg: list[int]) -> None:
        row = (now_s, pool, *agg)
        last = self._last_row_index.get(pool)
        if last is not None and self.rows[last][0] == now_s:
            self.rows[last] = row  # coalesce changes at one instant
            return
        if len(self.rows) >= ROW_CHUNK and self.rows[-1][0] < now_s:
            self.store.add(self._table(self.rows))  # every row so far is before now: final
            self.rows = []
            self._last_row_index = {}
        self._last_row_index[pool] = len(self.rows)
        self.rows.append(row)

    def _table(self, rows: list[tuple]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=COLUMNS)
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["kv_utilization"] = frame["kv_used_blocks"] / frame["kv_total_blocks"].replace(0, np.nan)
        frame["pool"] = pd.Categorical(frame["pool"], categories=self.pools or None)
        order = _canonical(frame["time_s"].to_numpy(), frame["pool"].cat.codes.to_numpy())
        return frame if order is None else frame.iloc[order].reset_index(drop=True)

    def extend(self, time_s: np.ndarray, pool: np.ndarray, running: np.ndarray, waiting: np.ndarray,
               kv_used_blocks: np.ndarray, busy_replicas: np.ndarray, kv_total_blocks: np.ndarray) -> None:
        """Append change points made elsewhere (the compiled engine core, a chunk at a time), in time order and
        already coalesced per instant and pool, ``pool`` as indices into :attr:`pools`. A pool's first one at the
        instant of its last row here replaces that row, as :meth:`update` would have; a later chunk starts after
        the instant of the one before. The monitor takes no further updates after this."""
        keep = np.ones(len(time_s), dtype=bool)
        for code, name in enumerate(self.pools):
            last = self._last_row_index.get(name)
            first = np.flatnonzero(pool == code)[:1]
            if last is not None and len(first) and self.rows[last][0] == time_s[first[0]]:
                i = int(first[0])
                self.rows[last] = (float(time_s[i]), name, int(running[i]), int(waiting[i]), int(kv_used_blocks[i]),
                                   int(busy_replicas[i]), int(kv_total_blocks[i]))
                keep[i] = False
        columns = [time_s[keep], pool[keep], running[keep], waiting[keep], kv_used_blocks[keep], busy_replicas[keep],
                   kv_total_blocks[keep]]
        if self.rows:  # this monitor's own rows (before the core's) go first
            code = {name: i for i, name in enumerate(self.pools)}
            own = list(zip(*self.rows, strict=True))
            own[1] = [code[name] for name in own[1]]
            columns = [np.concatenate([np.asarray(o, dtype=c.dtype), c]) for o, c in zip(own, columns, strict=True)]
        self.rows, self._last_row_index = [], {}
        order = _canonical(columns[0], columns[1])
        if order is not None:
            columns = [c[order] for c in columns]
        for start in range(0, len(columns[0]), ROW_CHUNK):
            part = [c[start:start + ROW_CHUNK] for c in columns]
            chunk = pd.DataFrame(dict(zip(COLUMNS, part, strict=True)))
            chunk["pool"] = pd.Categorical.from_codes(part[1], categories=self.pools)
            with np.errstate(invalid="ignore", divide="ignore"):
                chunk["kv_utilization"] = part[4] / np.where(part[6] == 0, np.nan, part[6])
            self.store.add(chunk)

    def aggregates(self, pool: str) -> list[int]:
        """The pool's running, waiting, KV-used, busy-replica and KV-total counts now."""
        return list(self._pool.get(pool, [0, 0, 0, 0, 0]))

    def finish(self) -> None:
        """Move the remaining rows into the store (at the end of the run)."""
        self.store.add(self._table(self.rows))
        self.rows = []
        self._last_row_index = {}

    def frame(self) -> pd.DataFrame:
        """The change points, with ``kv_utilization`` = used / total KV blocks of the pool's ready replicas."""
        return self.store.frame(self._table([])) if not self.rows else pd.concat(
            [self.store.frame(self._table([])), self._table(self.rows)], ignore_index=True)


def _canonical(time_s: np.ndarray, pool_code: np.ndarray) -> np.ndarray | None:
    """The row order that puts the pools' rows of one instant in pool order (None: already so).

    Pools change at one instant in the order their replicas' events happen to be scheduled, which differs between
    per-step and fast stepping (a decode run's end is scheduled when the run starts); the table does not."""
    if not np.any((np.diff(time_s) == 0) & (np.diff(pool_code) < 0)):
        return None
    return np.lexsort((pool_code, time_s))


def time_weighted_mean(frame: pd.DataFrame, column: str, end_s: float, start_s: float = 0.0) -> float:
    """Time-weighted mean of a change-point ``column`` (one entity) over ``[start_s, end_s]``.

    The value before the first row is taken as 0.
    """
    if end_s <= start_s:
        return float("nan")
    t = frame["time_s"].to_numpy(dtype=float)
    v = frame[column].to_numpy(dtype=float)
    t = np.clip(np.append(t, end_s), start_s, end_s)
    return float(np.sum(v * np.diff(t)) / (end_s - start_s))

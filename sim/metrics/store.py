"""Row stores that keep long runs in bounded memory: records are built in chunks and, past a threshold, spilled
to Parquet part files.

A run's per-request records and pool change points grow with its length; a ten-million-request replay would
hold gigabytes of Python objects if every row stayed in memory. :class:`RowStore` takes rows in chunks (the
caller decides when a chunk is full), turns each chunk into a DataFrame at once, and keeps the chunks in
memory until their rows exceed ``spill_rows``; from then on every chunk goes to ``part-NNNNN.parquet`` in the
spill folder and only the columns listed in ``keep`` stay in memory (for the summary). :meth:`RowStore.frame`
returns the whole table either way (reading the parts back when spilled, so call it only if you want it all).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from sim.errors import FleetsimError

#: Columns whose values differ on every row: a dictionary would only be tried and given up.
ROW_KEYS = ("request_id",)


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    """``frame`` to a Parquet file, dictionary-encoding all but its float columns and row keys: pyarrow's default
    tries a dictionary on every column and gives it up on columns of many distinct values, which makes writing a
    table of records or change points about twice as slow and its file no smaller (integer columns such as queue
    lengths or token counts keep theirs: they compress well). Reads back as the default writer's file does."""
    dictionary = [c for c in frame.columns if not pd.api.types.is_float_dtype(frame[c].dtype) and c not in ROW_KEYS]
    frame.to_parquet(path, index=False, use_dictionary=dictionary)


def clear_parts(folder: Path) -> None:
    """Remove the part files (``part-NNNNN.parquet``) a store wrote into ``folder``, and nothing else."""
    for part in folder.glob("part-*.parquet"):
        part.unlink()


class TempFolder:
    """A temporary folder of spilled parts, removed with everything in it once no one holds this object (the
    results of the run and their copies), or at the latest when the interpreter exits: a sweep of a thousand spilled
    runs must not leave a thousand copies of their records behind."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="fleetsim-"))
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)


class RowStore:
    """A table built chunk by chunk, in memory or spilled to Parquet parts.

    Parameters
    ----------
    spill_rows
        Rows held in memory before the store spills to disk (None: never spill).
    spill_dir
        Folder for the part files (created if needed); None: a fresh :class:`TempFolder` when the store spills
        (held in :attr:`temp`: whoever reads the parts later holds it too).
    keep
        Columns kept in memory once spilled (what the run's summary needs), with 64-bit integers narrowed to
        32 bits; every column is kept, unchanged, in the parts.
    """

    def __init__(self, spill_rows: int | None = None, spill_dir: str | Path | None = None,
                 keep: Sequence[str] = ()) -> None:
        self.spill_rows = spill_rows
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.keep = list(keep)
        self.chunks: list[pd.DataFrame] = []
        # Once spilled: the kept columns of each chunk, as arrays (joined column by column at the end, each
        # column's pieces freed as it is joined, so the join never holds the rows twice).
        self.slim: list[dict[str, np.ndarray]] = []
        self.rows = 0
        self.parts: list[Path] = []
        self.temp: TempFolder | None = None

    @property
    def spilled(self) -> bool:
        """True once rows have gone to disk."""
        return bool(self.parts)

    def add(self, chunk: pd.DataFrame) -> None:
        """Append a chunk of rows (columns as the other chunks)."""
        if not len(chunk):
            return
        self.rows += len(chunk)
        if self.spilled:
            self._write(chunk)
            self.slim.append(self._slim(chunk))
            return
        self.chunks.append(chunk)
        if self.spill_rows is not None and self.rows > self.spill_rows:
            held, self.chunks = self.chunks, []
            for frame in held:
                self._write(frame)
                self.slim.append(self._slim(frame))

    def _slim(self, frame: pd.DataFrame) -> dict[str, np.ndarray | pd.Categorical]:
        return {c: frame[c].array.copy() if isinstance(frame[c].dtype, pd.CategoricalDtype)
                else frame[c].to_numpy(dtype="int32" if frame[c].dtype == "int64" else None, copy=True)
                for c in self.keep}

    @staticmethod
    def _join(pieces: list) -> np.ndarray | pd.Categorical:
        if isinstance(pieces[0], pd.Categorical):
            return union_categoricals(pieces)
        return np.concatenate(pieces)

    def _write(self, frame: pd.DataFrame) -> None:
        try:
            if self.spill_dir is None:
                self.temp = TempFolder()
                self.spill_dir = self.temp.path
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            if not self.parts:  # parts of an earlier run in the same folder would be read back with these
                clear_parts(self.spill_dir)
            path = self.spill_dir / f"part-{len(self.parts):05d}.parquet"
            write_parquet(frame, path)
        except OSError as err:
            raise FleetsimError(f"{self.spill_dir}: cannot write spilled records ({err.strerror or err}); set "
                                "run.spill_dir (or --out) to a writable folder, or raise run.spill_after_requests"
                                ) from None
        self.parts.append(path)

    def kept(self, empty: pd.DataFrame) -> pd.DataFrame:
        """The in-memory columns of every row (all columns unless spilled); ``empty`` gives the dtypes of a
        table with no rows."""
        if self.spilled and self.slim:
            columns = {c: self._join([chunk.pop(c) for chunk in self.slim]) for c in self.keep}
            self.slim = []
            self.chunks = [pd.DataFrame(columns, copy=False)]
        if self.spilled:
            return self.chunks[0] if self.chunks else pd.DataFrame({c: empty[c] for c in self.keep})
        frames = self.chunks or [empty]
        if len(frames) > 1:
            self.chunks = [pd.concat(frames, ignore_index=True)]  # hold one copy, not the chunks and their join
            frames = self.chunks
        return frames[0].reset_index(drop=True)

    def frame(self, empty: pd.DataFrame) -> pd.DataFrame:
        """Every row with every column (read back from the parts when spilled)."""
        if not self.spilled:
            return self.kept(empty)
        return pd.concat([pd.read_parquet(p) for p in self.parts], ignore_index=True)

"""Smooth efficiency corrections in log space, and the linear least-squares that fits them.

A :class:`LogGrid` is a function of ``log2`` coordinates that is multilinear between knots and held constant
beyond the outer knots. It multiplies a roofline: ``time = roofline(x) * exp(grid(log2 x))``. Knot values are
fitted by ridge-regularised linear least squares on ``log(measured / roofline)``, so a knot with no data near it
stays at 0 (the plain roofline with its fitted efficiencies), and extrapolation holds the boundary correction.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # scipy is imported where the fit runs: simulations only evaluate grids
    import scipy.sparse as sp


def _locate(x: float, knots: tuple[float, ...]) -> tuple[int, float]:
    """Left knot index and fraction of ``x`` on ``knots`` (clamped to the outer knots)."""
    if x <= knots[0]:
        return 0, 0.0
    if x >= knots[-1]:
        return len(knots) - 2, 1.0
    i = bisect_right(knots, x) - 1
    return i, (x - knots[i]) / (knots[i + 1] - knots[i])


def _locate_many(x: np.ndarray, knots: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_locate` of each of ``x``, with the same arithmetic."""
    k = np.asarray(knots)
    i = np.clip(np.searchsorted(k, x, side="right") - 1, 0, len(k) - 2)
    f = (x - k[i]) / (k[i + 1] - k[i])
    low, high = x <= k[0], x >= k[-1]
    return np.where(low, 0, np.where(high, len(k) - 2, i)), np.where(low, 0.0, np.where(high, 1.0, f))


@dataclass(frozen=True)
class LogGrid:
    """Multilinear function on a grid of ``log2`` knots; ``values`` has one axis per coordinate."""

    knots: tuple[tuple[float, ...], ...]
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.values.shape != tuple(len(k) for k in self.knots):
            raise ValueError(f"values shape {self.values.shape} does not match knots {[len(k) for k in self.knots]}")
        if any(len(k) < 2 or any(b <= a for a, b in itertools.pairwise(k)) for k in self.knots):
            raise ValueError("each axis needs at least two strictly increasing knots")
        # Nested Python lists index far faster than numpy scalars on the simulation's hot path.
        object.__setattr__(self, "_nested", self.values.tolist())

    def at(self, *log2_coords: float) -> float:
        """The correction at one point (fast scalar path; unrolled for one to three axes)."""
        v = self._nested
        if len(log2_coords) == 3:
            (i, f), (j, g), (k, h) = (_locate(x, kn) for x, kn in zip(log2_coords, self.knots, strict=True))
            a, b = v[i], v[i + 1]
            lo = (a[j][k] * (1 - h) + a[j][k + 1] * h) * (1 - g) + (a[j + 1][k] * (1 - h) + a[j + 1][k + 1] * h) * g
            hi = (b[j][k] * (1 - h) + b[j][k + 1] * h) * (1 - g) + (b[j + 1][k] * (1 - h) + b[j + 1][k + 1] * h) * g
            return lo * (1 - f) + hi * f
        if len(log2_coords) == 1:
            i, f = _locate(log2_coords[0], self.knots[0])
            return v[i] * (1 - f) + v[i + 1] * f
        located = [_locate(x, k) for x, k in zip(log2_coords, self.knots, strict=True)]
        total = 0.0
        for corner in itertools.product((0, 1), repeat=len(located)):
            weight = 1.0
            index = []
            for c, (i, f) in zip(corner, located, strict=True):
                weight *= f if c else 1.0 - f
                index.append(i + c)
            if weight:
                total += weight * self.values[tuple(index)]
        return float(total)

    def slice2(self, axis_a: int, axis_b: int, fixed: dict[int, float]) -> Slice2:
        """The surface over two axes with the others held at ``fixed`` (log2 values): exact, since the surface
        is multilinear, so later lookups need only a bilinear interpolation."""
        ka, kb = self.knots[axis_a], self.knots[axis_b]
        # :meth:`at` at every (xa, xb) knot pair at once: the same corner-by-corner sum, elementwise, so each value
        # equals the scalar method's to the last bit (tests/test_perf.py).
        grid_a, grid_b = np.meshgrid(np.asarray(ka), np.asarray(kb), indexing="ij")
        located = []
        for axis, knots in enumerate(self.knots):
            if axis in (axis_a, axis_b):
                x = (grid_a if axis == axis_a else grid_b).ravel()
                located.append(_locate_many(x, knots))
            else:
                i, f = _locate(fixed.get(axis, 0.0), knots)
                located.append((np.full(grid_a.size, i), np.full(grid_a.size, f)))
        total = np.zeros(grid_a.size)
        for corner in itertools.product((0, 1), repeat=len(located)):
            weight = np.ones(grid_a.size)
            index = []
            for c, (i, f) in zip(corner, located, strict=True):
                weight = weight * (f if c else 1.0 - f)
                index.append(i + c)
            term = weight * self.values[tuple(index)]
            total = np.where(weight != 0, total + term, total)  # as at(): a corner of weight 0 adds nothing
        return Slice2(ka, kb, total.reshape(grid_a.shape).tolist())

    def to_dict(self, digits: int = 4) -> dict:
        """Knots per axis and the values flattened in row-major order (the shape follows from the knots), as one
        string of space-separated numbers: a YAML list of thousands of numbers takes a third of a second to load,
        one string a millisecond."""
        return {"knots_log2": [list(k) for k in self.knots],
                "values": " ".join(repr(v) for v in np.round(self.values, digits).ravel().tolist())}

    @classmethod
    def from_dict(cls, data: dict) -> LogGrid:
        """:meth:`to_dict`'s form back; ``values`` may also be a list of numbers."""
        knots = tuple(tuple(float(v) for v in k) for k in data["knots_log2"])
        shape = tuple(len(k) for k in knots)
        values = data["values"]
        # numpy parses decimal strings as float() does (correctly rounded), and faster
        values = np.array(values.split() if isinstance(values, str) else values, dtype=float)
        if values.size != int(np.prod(shape)):
            raise ValueError(f"{values.size} correction values for knots of shape {shape}")
        return cls(knots, values.reshape(shape))



@dataclass(frozen=True)
class Slice2:
    """A two-axis section of a :class:`LogGrid` (see :meth:`LogGrid.slice2`)."""

    knots_a: tuple[float, ...]
    knots_b: tuple[float, ...]
    values: list[list[float]]

    def at(self, xa: float, xb: float) -> float:
        i, f = _locate(xa, self.knots_a)
        j, g = _locate(xb, self.knots_b)
        v0, v1 = self.values[i], self.values[i + 1]
        return (v0[j] * (1 - g) + v0[j + 1] * g) * (1 - f) + (v1[j] * (1 - g) + v1[j + 1] * g) * f

    def at_rows(self, xa: list[float], xb: np.ndarray) -> np.ndarray:
        """:meth:`at` at each of ``xa`` (rows) and each of ``xb`` (columns), with the same arithmetic
        elementwise, so each value equals the scalar method's to the last bit."""
        located = [_locate(x, self.knots_a) for x in xa]
        values = np.asarray(self.values)
        v0 = values[[i for i, _ in located]]
        v1 = values[[i + 1 for i, _ in located]]
        f = np.array([[fr] for _, fr in located])
        kb = np.asarray(self.knots_b)
        xc = np.clip(xb, kb[0], kb[-1])
        j = np.clip(np.searchsorted(kb, xc, side="right") - 1, 0, len(kb) - 2)
        g = (xc - kb[j]) / (kb[j + 1] - kb[j])
        return (v0[:, j] * (1 - g) + v0[:, j + 1] * g) * (1 - f) + (v1[:, j] * (1 - g) + v1[:, j + 1] * g) * f


def design_matrix(log2_coords: list[np.ndarray], knots: tuple[tuple[float, ...], ...]) -> sp.csr_matrix:
    """Sparse matrix whose row ``r`` holds the multilinear weights of point ``r`` on the knots (row-major)."""
    import scipy.sparse as sp

    n = len(log2_coords[0])
    dims = [len(k) for k in knots]
    located = []
    for x, k in zip(log2_coords, knots, strict=True):
        karr = np.asarray(k)
        xc = np.clip(x, karr[0], karr[-1])
        i = np.clip(np.searchsorted(karr, xc, side="right") - 1, 0, len(karr) - 2)
        located.append((i, (xc - karr[i]) / (karr[i + 1] - karr[i])))
    rows, cols, vals = [], [], []
    for corner in itertools.product((0, 1), repeat=len(located)):
        weight = np.ones(n)
        flat = np.zeros(n, dtype=np.int64)
        for axis, (c, (i, f)) in enumerate(zip(corner, located, strict=True)):
            weight = weight * (f if c else 1.0 - f)
            flat = flat * dims[axis] + (i + c)
        rows.append(np.arange(n))
        cols.append(flat)
        vals.append(weight)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, int(np.prod(dims)))
    )


def second_differences(dims: tuple[int, ...]) -> sp.csr_matrix:
    """Rows ``v[i-1] - 2 v[i] + v[i+1]`` along every axis of a row-major grid of shape ``dims``."""
    import scipy.sparse as sp

    blocks = []
    for axis, size in enumerate(dims):
        if size < 3:
            continue
        index = np.indices(dims).reshape(len(dims), -1)
        inner = index[:, (index[axis] >= 1) & (index[axis] <= size - 2)]
        rows = np.arange(inner.shape[1])
        cols = []
        for offset, weight in ((-1, 1.0), (0, -2.0), (1, 1.0)):
            shifted = inner.copy()
            shifted[axis] += offset
            cols.append((np.ravel_multi_index(shifted, dims), weight))
        data = np.concatenate([np.full(len(rows), w) for _, w in cols])
        blocks.append(sp.csr_matrix((data, (np.tile(rows, 3), np.concatenate([c for c, _ in cols]))),
                                    shape=(len(rows), int(np.prod(dims)))))
    return sp.vstack(blocks).tocsr() if blocks else sp.csr_matrix((0, int(np.prod(dims))))


def fit_grid(log2_coords: list[np.ndarray], residual_log: np.ndarray, knots: tuple[tuple[float, ...], ...],
             ridge: float = 0.01, smooth: float = 1.0, huber: float = 0.1, iterations: int = 3) -> LogGrid:
    """Knot values minimising ``|W (A v - r)|^2 + smooth^2 |D v|^2 + ridge^2 |v|^2`` (r = log measured/base).

    ``D`` takes second differences along every axis (a P-spline penalty): a knot with no data near it follows
    its neighbours' trend instead of falling back to 0. ``W`` are Huber weights from iteratively reweighted
    least squares, so outliers (rows where a different kernel was picked) do not drag the surface.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import lsqr

    dims = tuple(len(k) for k in knots)
    penalty = smooth * second_differences(dims)
    a = design_matrix(log2_coords, knots)
    residual_log = np.asarray(residual_log, dtype=float)
    weights = np.ones(len(residual_log))
    values = np.zeros(a.shape[1])
    for _ in range(iterations):
        scale = sp.diags(np.sqrt(weights))
        system = sp.vstack([scale @ a, penalty]).tocsr()
        target = np.concatenate([np.sqrt(weights) * residual_log, np.zeros(penalty.shape[0])])
        values = lsqr(system, target, damp=ridge)[0]
        error = np.abs(a @ values - residual_log)
        weights = np.minimum(1.0, huber / np.maximum(error, 1e-12))
    return LogGrid(knots, values.reshape(tuple(len(k) for k in knots)))


def isotonic_increasing(values: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit of a sequence (pool-adjacent-violators)."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return np.concatenate([np.full(int(c), s / c) for s, c in blocks])


def octave_knots(low_log2: float, high_log2: float, step: float = 1.0) -> tuple[float, ...]:
    """Knots from ``low`` to ``high`` (log2 units) every ``step``."""
    return tuple(float(v) for v in np.arange(low_log2, high_log2 + step / 2, step))


def bound_growth(grid: LogGrid, axis: int, max_log_increase_per_octave: float) -> LogGrid:
    """Clamp how fast an efficiency correction may rise along ``axis``.

    For ``time = work / (peak x efficiency)``, time stays monotone in ``work`` as long as the efficiency grows
    more slowly than the work does: with knots one octave apart, the log-efficiency may rise by at most
    ``max_log_increase_per_octave`` per octave. Here the grid holds log *slowdown* (minus log efficiency), so
    its values may fall by at most that much per octave.
    """
    values = np.moveaxis(grid.values.copy(), axis, 0)
    knots = grid.knots[axis]
    for j in range(1, len(knots)):
        limit = max_log_increase_per_octave * (knots[j] - knots[j - 1])
        values[j] = np.maximum(values[j], values[j - 1] - limit)
    return LogGrid(grid.knots, np.moveaxis(values, 0, axis))

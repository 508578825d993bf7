"""Token-length distributions: frozen values with ``sample(rng, n)`` and analytic moments.

All samples are positive integers. Continuous distributions are discretised by ``ceil`` (so a draw is never 0);
the ``mean`` property gives the mean of the continuous law, which the discretised draws exceed by about 0.5.
Truncation is never silent: ``max_tokens`` on the log-normal resamples draws above the cap (a truncated law),
and its documented ``mean`` is the truncated one.
"""

from __future__ import annotations

import csv
import math
from functools import cache
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim import libm
from sim.errors import TraceError
from sim.limits import MAX_TOKENS
from sim.workload.traces import reading

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)


class FixedLength(BaseModel):
    """Every request has exactly ``tokens`` tokens."""

    model_config = _FROZEN
    dist: Literal["fixed"] = "fixed"
    tokens: int = Field(gt=0, le=MAX_TOKENS)

    @property
    def mean(self) -> float:
        return float(self.tokens)

    @property
    def cv(self) -> float:
        return 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.tokens, dtype=np.int64)


class UniformLength(BaseModel):
    """Integers uniform on ``[low, high]`` inclusive."""

    model_config = _FROZEN
    dist: Literal["uniform"] = "uniform"
    low: int = Field(gt=0, le=MAX_TOKENS)
    high: int = Field(gt=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    @property
    def cv(self) -> float:
        width = self.high - self.low + 1
        return math.sqrt((width**2 - 1) / 12) / self.mean

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.low, self.high, size=n, endpoint=True, dtype=np.int64)


class LogNormalLength(BaseModel):
    """Log-normal with the given ``mean`` and coefficient of variation ``cv``, discretised by ``ceil``.

    With ``max_tokens`` set, the law is truncated at that value (draws above it are redrawn), and ``mean`` is
    the truncated mean.
    """

    model_config = _FROZEN
    dist: Literal["lognormal"] = "lognormal"
    mean_tokens: float = Field(gt=0, le=MAX_TOKENS, alias="mean")
    cv_value: float = Field(gt=0, le=100, alias="cv")
    max_tokens: int | None = Field(default=None, gt=0, le=MAX_TOKENS)

    @property
    def _shape_scale(self) -> tuple[float, float]:
        """The underlying normal's sigma, and the median exp(mu), that give ``mean`` and ``cv``."""
        sigma = math.sqrt(math.log1p(self.cv_value**2))
        return sigma, math.exp(math.log(self.mean_tokens) - sigma**2 / 2)

    @property
    def _frozen(self):
        from scipy import stats  # imported on use: scipy.stats alone takes about a second to import

        sigma, scale = self._shape_scale
        return stats.lognorm(s=sigma, scale=scale)

    @property
    def mean(self) -> float:
        dist = self._frozen
        if self.max_tokens is None:
            return float(dist.mean())
        upper = self.max_tokens
        return float(dist.expect(lambda x: x, ub=upper, conditional=True))

    @property
    def cv(self) -> float:
        """Coefficient of variation of the (truncated, if ``max_tokens``) continuous law."""
        if self.max_tokens is None:
            return self.cv_value
        mean = self.mean
        second = float(self._frozen.expect(lambda x: x * x, ub=self.max_tokens, conditional=True))
        return math.sqrt(max(second - mean * mean, 0.0)) / mean

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # The normal CDF and its inverse from scipy.special: the same floats as scipy.stats.lognorm's cdf, ppf and
        # rvs (checked bit for bit), without the second scipy.stats takes to import in every fresh process.
        from scipy.special import ndtr, ndtri

        sigma, scale = self._shape_scale
        if self.max_tokens is None:
            return np.ceil(libm.exp(sigma * rng.standard_normal(n)) * scale).astype(np.int64)
        # Inverse-CDF sampling of the truncated law: exact, and a fixed number of draws per sample.
        u = rng.random(n) * ndtr(math.log(self.max_tokens / scale) / sigma)
        return np.minimum(np.ceil(libm.exp(sigma * ndtri(u)) * scale), self.max_tokens).astype(np.int64)


class GeometricLength(BaseModel):
    """Geometric on {1, 2, ...} with the given mean: the discrete analogue of an exponential length."""

    model_config = _FROZEN
    dist: Literal["geometric"] = "geometric"
    mean_tokens: float = Field(ge=1, le=MAX_TOKENS, alias="mean")

    @property
    def mean(self) -> float:
        return self.mean_tokens

    @property
    def cv(self) -> float:
        p = 1 / self.mean_tokens
        return math.sqrt(1 - p)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.geometric(1 / self.mean_tokens, size=n).astype(np.int64)


class EmpiricalLength(BaseModel):
    """Draw with replacement from one column of a CSV file (e.g. the ShareGPT length statistics).

    ``path`` is resolved relative to the scenario file when the scenario is loaded.
    """

    model_config = _FROZEN
    dist: Literal["empirical"] = "empirical"
    path: str
    column: str
    paired: bool = Field(default=False, description="output_tokens only: draw the same rows as prompt_tokens (an "
                         "empirical prompt_tokens from the same file), keeping each request's (prompt, output) pair")

    @property
    def values(self) -> np.ndarray:
        return read_length_column(self.path, self.column)

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def cv(self) -> float:
        v = self.values
        return float(v.std() / v.mean())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        v = self.values
        return v[rng.integers(0, len(v), size=n)]


LengthDist = Annotated[
    FixedLength | UniformLength | LogNormalLength | GeometricLength | EmpiricalLength,
    Field(discriminator="dist"),
]


@cache
def read_length_column(path: str, column: str) -> np.ndarray:
    """Positive integer lengths from ``column`` of the CSV at ``path``; a bad row names its line."""
    values = []
    with reading(path), open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise TraceError(path, 0, f"empty file; expected a header row naming column {column!r}")
        if column not in header:
            raise TraceError(path, 1, f"no column {column!r}; columns are {header}")
        at = header.index(column)
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise TraceError(path, line, f"expected {len(header)} fields, got {len(row)}")
            raw = row[at]
            try:
                number = float(raw)
            except ValueError:
                number = float("nan")
            if not (math.isfinite(number) and number >= 1 and number == round(number)):
                raise TraceError(path, line, f"column {column!r} must hold positive integers, got {raw!r}")
            if number > MAX_TOKENS:
                raise TraceError(path, line, f"column {column!r} must hold lengths up to {MAX_TOKENS:,} tokens "
                                 f"(no model's context is longer), got {raw!r}")
            values.append(int(number))
    if not values:
        raise TraceError(path, 0, f"column {column!r} has no rows")
    return np.asarray(values, dtype=np.int64)

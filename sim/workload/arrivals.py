"""Open-loop arrival processes: frozen values that sample arrival times (seconds from the start).

Renewal processes (Poisson, Gamma, constant) draw their inter-arrival gaps in bulk. Time-varying rates
(piecewise-constant, diurnal) use thinning (Lewis and Shedler, 1979) of a Poisson process at the peak rate.
The first arrival comes one gap after time zero, never at zero itself.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim import libm

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)


def _renewal_times(draw, rng: np.random.Generator, n: int | None, until_s: float | None, rate: float):
    """Cumulative sums of gaps from ``draw(rng, k)``, stopping at ``n`` arrivals or after ``until_s``."""
    if n is not None:
        times = np.cumsum(draw(rng, n))
        return times if until_s is None else times[times < until_s]
    chunks, last = [], 0.0
    chunk = max(16, int(until_s * rate * 1.1) + 16)
    while last < until_s:
        times = last + np.cumsum(draw(rng, chunk))
        chunks.append(times)
        last = float(times[-1])
    times = np.concatenate(chunks)
    return times[times < until_s]


class _RenewalArrivals(BaseModel):
    """Shared sampling of renewal processes: i.i.d. gaps of mean ``1 / rate_per_s`` from :meth:`_gaps`."""

    model_config = _FROZEN
    rate_per_s: float = Field(gt=0)

    @property
    def mean_rate_per_s(self) -> float:
        return self.rate_per_s

    @property
    def peak_rate_per_s(self) -> float:
        return self.rate_per_s

    @property
    def ends_s(self) -> float | None:
        return None

    def expected_arrivals(self, until_s: float) -> float:
        """About how many arrivals come in ``[0, until_s)``."""
        return self.rate_per_s * until_s

    def _gaps(self, rng: np.random.Generator, k: int) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def sample_times(self, rng: np.random.Generator, n: int | None = None, until_s: float | None = None):
        return _renewal_times(self._gaps, rng, n, until_s, self.rate_per_s)


class PoissonArrivals(_RenewalArrivals):
    """Poisson process: exponential gaps with mean ``1 / rate_per_s``."""

    process: Literal["poisson"] = "poisson"

    @property
    def cv(self) -> float:
        return 1.0

    def _gaps(self, rng: np.random.Generator, k: int) -> np.ndarray:
        return rng.exponential(1 / self.rate_per_s, k)


class GammaArrivals(_RenewalArrivals):
    """Renewal process with Gamma gaps of mean ``1 / rate_per_s`` and coefficient of variation ``cv``.

    ``cv > 1`` is burstier than Poisson, ``cv < 1`` more regular; ``cv = 1`` is Poisson.
    """

    process: Literal["gamma"] = "gamma"
    cv: float = Field(ge=1e-3, le=100, description="below 0.001 use constant arrivals")

    def _gaps(self, rng: np.random.Generator, k: int) -> np.ndarray:
        shape = 1 / self.cv**2
        return rng.gamma(shape, 1 / (self.rate_per_s * shape), k)


class ConstantArrivals(_RenewalArrivals):
    """Deterministic arrivals every ``1 / rate_per_s`` seconds."""

    process: Literal["constant"] = "constant"

    @property
    def cv(self) -> float:
        return 0.0

    def _gaps(self, rng: np.random.Generator, k: int) -> np.ndarray:
        return np.full(k, 1 / self.rate_per_s)


class _ThinnedArrivals(BaseModel):
    """Shared sampling of non-homogeneous Poisson processes by thinning."""

    model_config = _FROZEN

    def rate_at(self, t_s: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def peak_rate_per_s(self) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def ends_s(self) -> float | None:
        """The time after which the rate is 0 for ever (None: never)."""
        return None

    def expected_arrivals(self, until_s: float) -> float:
        """About how many arrivals come in ``[0, until_s)`` (an upper bound: the peak rate throughout)."""
        return self.peak_rate_per_s * min(until_s, self.ends_s if self.ends_s is not None else until_s)

    def sample_times(self, rng: np.random.Generator, n: int | None = None, until_s: float | None = None):
        peak = self.peak_rate_per_s
        horizon = min(t for t in (until_s, self.ends_s, np.inf) if t is not None)
        out, last, accepted = [], 0.0, 0
        chunk = 4096
        while True:
            cand = last + np.cumsum(rng.exponential(1 / peak, chunk))
            keep = cand[rng.random(chunk) * peak < self.rate_at(cand)]
            last = float(cand[-1])
            out.append(keep)
            accepted += len(keep)
            # Enough arrivals, or past the end (of the workload, or of a rate that stays 0 from then on).
            if (n is not None and accepted >= n) or last >= horizon:
                break
        times = np.concatenate(out)
        if n is not None:
            times = times[:n]
        return times if until_s is None else times[times < until_s]


class PiecewiseArrivals(_ThinnedArrivals):
    """Poisson arrivals whose rate is piecewise constant: ``rates_per_s[i]`` from ``times_s[i]`` on.

    With ``period_s`` the pattern repeats (e.g. 86400 for a daily profile).
    """

    process: Literal["piecewise"] = "piecewise"
    times_s: tuple[float, ...] = Field(min_length=1)
    rates_per_s: tuple[float, ...] = Field(min_length=1)
    period_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> PiecewiseArrivals:
        if len(self.times_s) != len(self.rates_per_s):
            raise ValueError("times_s and rates_per_s must have the same length")
        if self.times_s[0] != 0:
            raise ValueError("times_s must start at 0")
        if any(b <= a for a, b in zip(self.times_s, self.times_s[1:], strict=False)):
            raise ValueError("times_s must be strictly increasing")
        if any(r < 0 for r in self.rates_per_s) or max(self.rates_per_s) <= 0:
            raise ValueError("rates_per_s must be >= 0 with at least one > 0")
        if self.period_s is not None and self.times_s[-1] >= self.period_s:
            raise ValueError("every entry of times_s must be < period_s")
        return self

    @property
    def peak_rate_per_s(self) -> float:
        return max(self.rates_per_s)

    @property
    def ends_s(self) -> float | None:
        return self.times_s[-1] if self.period_s is None and self.rates_per_s[-1] == 0 else None

    def expected_arrivals(self, until_s: float) -> float:
        edges = [*self.times_s, np.inf] if self.period_s is None else [*self.times_s, self.period_s]
        one = sum(r * max(0.0, min(b, until_s) - a) for r, a, b in zip(self.rates_per_s, edges, edges[1:],
                                                                         strict=False))
        if self.period_s is None:
            return one
        return self.mean_rate_per_s * until_s + one  # whole periods, plus at most one more

    @property
    def mean_rate_per_s(self) -> float:
        """Mean over one period (or, without a period, the last rate, which holds forever)."""
        if self.period_s is None:
            return self.rates_per_s[-1]
        edges = [*self.times_s, self.period_s]
        return sum(r * (b - a) for r, a, b in zip(self.rates_per_s, edges, edges[1:], strict=False)) / self.period_s

    def rate_at(self, t_s: np.ndarray) -> np.ndarray:
        t = np.asarray(t_s) if self.period_s is None else np.mod(t_s, self.period_s)
        idx = np.searchsorted(np.asarray(self.times_s), t, side="right") - 1
        return np.asarray(self.rates_per_s)[idx]


class DiurnalArrivals(_ThinnedArrivals):
    """Poisson arrivals with a sinusoidal rate: ``mean * (1 + amplitude * cos(2 pi (t - peak_s) / period_s))``."""

    process: Literal["diurnal"] = "diurnal"
    mean_rate_per_s: float = Field(gt=0)
    amplitude: float = Field(ge=0, lt=1)
    period_s: float = Field(default=86400.0, gt=0)
    peak_s: float = Field(default=0.0, ge=0)

    @property
    def peak_rate_per_s(self) -> float:
        return self.mean_rate_per_s * (1 + self.amplitude)

    def rate_at(self, t_s: np.ndarray) -> np.ndarray:
        phase = 2 * math.pi * (np.asarray(t_s) - self.peak_s) / self.period_s
        return self.mean_rate_per_s * (1 + self.amplitude * libm.cos(phase))


ArrivalProcess = Annotated[
    PoissonArrivals | GammaArrivals | ConstantArrivals | PiecewiseArrivals | DiurnalArrivals,
    Field(discriminator="process"),
]

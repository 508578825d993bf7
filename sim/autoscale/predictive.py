"""Predictive autoscaling: forecast the arrival rate one cold start ahead, and provision for it now.

Holt's linear trend (double exponential smoothing) over the arrival counts of the recent ``bucket_s`` buckets; the
level estimates the rate in the middle of the last bucket, so the forecast for ``lead_s`` ahead is
``level + trend x (lead_s / bucket_s + 0.5)``. Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def bucket_rates(arrival_times: Sequence[float], now_s: float, bucket_s: float, history_s: float) -> list[float]:
    """Arrivals per second in the whole buckets ``[now - k b, now - (k - 1) b)`` within ``history_s``, oldest
    first (buckets before time 0 are left out)."""
    n = min(int(history_s // bucket_s), int(now_s // bucket_s))
    counts = [0] * n
    for t in arrival_times:
        k = int((now_s - t) // bucket_s)  # 0: the newest bucket
        if 0 <= k < n and t < now_s:
            counts[n - 1 - k] += 1
    return [c / bucket_s for c in counts]


def holt_forecast(rates: Sequence[float], alpha: float, beta: float, buckets_ahead: float) -> float:
    """Rate forecast ``buckets_ahead`` buckets past the middle of the last one (never below 0)."""
    if not rates:
        return 0.0
    level, trend = rates[0], (rates[1] - rates[0]) if len(rates) > 1 else 0.0
    for x in rates[1:]:
        previous = level
        level = alpha * x + (1 - alpha) * (level + trend)
        trend = beta * (level - previous) + (1 - beta) * trend
    return max(0.0, level + trend * buckets_ahead)


def replicas_for(rate_per_s: float, capacity_rps: float, headroom: float) -> int:
    """Replicas that serve ``rate_per_s`` at ``capacity_rps`` each with ``headroom`` to spare."""
    return math.ceil(rate_per_s * (1 + headroom) / capacity_rps - 1e-9)

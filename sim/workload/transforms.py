"""What-if transforms of a trace: spread bucketed timestamps, scale the rate, splice traces end to end.

Pure functions of :class:`~sim.workload.traces.TraceArrays` (and a generator where they draw). Windowing and
time-warping are :func:`sim.workload.source.trace_arrays`'s ``start_s``, ``duration_s`` and ``time_scale``.
"""

from __future__ import annotations

import numpy as np

from sim.workload.traces import TraceArrays


def _sorted(times: np.ndarray, arrays: TraceArrays, idx: np.ndarray) -> TraceArrays:
    order = np.argsort(times, kind="stable")
    picked = arrays.take(idx[order])
    return TraceArrays(times[order], picked.prompt_tokens, picked.output_tokens, picked.prefix_blocks)


def spread(arrays: TraceArrays, width_s: float, rng: np.random.Generator) -> TraceArrays:
    """Move each arrival uniformly within ``[t, t + width_s)``: for traces whose timestamps are bucketed (Mooncake's
    conversation trace has about 3-s buckets), so that a bucket's requests do not all arrive at once."""
    if width_s <= 0 or len(arrays) == 0:
        return arrays
    times = arrays.arrival_s + rng.uniform(0.0, width_s, len(arrays))
    return _sorted(times, arrays, np.arange(len(arrays)))


def scale_rate(arrays: TraceArrays, factor: float, rng: np.random.Generator) -> TraceArrays:
    """``factor`` times the traffic over the same span, lengths unchanged in distribution.

    Below 1: each request is kept with probability ``factor`` (thinning). Above 1: the trace plus ``floor(factor)
    - 1`` copies shifted circularly by a uniform offset within the span, plus a thinned copy for the fraction
    (superposition: each copy has the trace's rate profile up to its shift, so burstiness is averaged somewhat).
    """
    n = len(arrays)
    if factor == 1 or n == 0:
        return arrays
    span = float(arrays.arrival_s[-1]) if n > 1 else 0.0
    times, idx = [], []
    whole, frac = int(factor), factor - int(factor)
    for copy in range(whole):
        shift = 0.0 if copy == 0 else rng.uniform(0.0, span) if span > 0 else 0.0
        t = arrays.arrival_s + shift
        times.append(np.where(t > span, t - span, t) if span > 0 else t)
        idx.append(np.arange(n))
    if frac > 0:
        keep = np.flatnonzero(rng.random(n) < frac)
        shift = rng.uniform(0.0, span) if whole >= 1 and span > 0 else 0.0
        t = arrays.arrival_s[keep] + shift
        times.append(np.where(t > span, t - span, t) if span > 0 else t)
        idx.append(keep)
    return _sorted(np.concatenate(times), arrays, np.concatenate(idx))


def splice(parts: list[TraceArrays], gap_s: float = 0.0) -> TraceArrays:
    """The traces one after the other, each starting ``gap_s`` after the previous one's last arrival."""
    times, offset = [], 0.0
    for part in parts:
        times.append(part.arrival_s + offset)
        if len(part):
            offset += float(part.arrival_s[-1]) + gap_s
    blocks = None
    if all(p.prefix_blocks is not None for p in parts):
        blocks = tuple(b for p in parts for b in p.prefix_blocks)
    return TraceArrays(np.concatenate(times), np.concatenate([p.prompt_tokens for p in parts]),
                       np.concatenate([p.output_tokens for p in parts]), blocks)

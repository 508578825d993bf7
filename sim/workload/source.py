"""Turn a workload config into arrivals: arrays for open-loop and trace replay, processes for closed loop."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from sim.config import ClosedLoopWorkload, FittedWorkload, OpenLoopWorkload, ServeGenWorkload, TraceWorkload
from sim.engine.request import Request
from sim.errors import FleetsimError, TraceError
from sim.rng import Streams
from sim.workload.lengths import LengthDist
from sim.workload.synthesis import expected_arrivals, fit_trace, read_servegen, renewal_arrivals
from sim.workload.traces import TraceArrays, read_trace
from sim.workload.transforms import scale_rate, spread

Dispatch = Callable[..., Request]
#: Arrivals converted from arrays to Python numbers at a time (see :func:`replay`).
REPLAY_BLOCK = 65_536


def open_loop_arrays(wl: OpenLoopWorkload, streams: Streams) -> TraceArrays:
    """Arrival times and lengths of an open-loop workload, drawn in bulk from their own streams."""
    times = wl.arrival.sample_times(streams.get("arrivals"), n=wl.num_requests, until_s=wl.duration_s)
    n = len(times)
    if getattr(wl.output_tokens, "paired", False):  # (prompt, output) rows of one file, drawn together
        rows = streams.get("prompt_tokens").integers(0, len(wl.prompt_tokens.values), size=n)
        return TraceArrays(times, wl.prompt_tokens.values[rows], wl.output_tokens.values[rows])
    return TraceArrays(
        arrival_s=times,
        prompt_tokens=wl.prompt_tokens.sample(streams.get("prompt_tokens"), n),
        output_tokens=wl.output_tokens.sample(streams.get("output_tokens"), n),
    )


def trace_arrays(wl: TraceWorkload, streams: Streams | None = None) -> TraceArrays:
    """A trace file, windowed to ``[start_s, start_s + duration_s)``, re-based to 0, time-scaled and cut; with
    ``streams``, also spread (``spread_s``) and rate-scaled (``rate_scale``) by their own streams.

    Without ``streams`` (load-time checks) the transforms that draw are left out: spreading never empties a
    window, and thinning (``rate_scale`` below 1) is checked there to expect at least one request.
    """
    full = read_trace(wl.format, wl.path, **wl.reader_options())
    keep = full.arrival_s >= wl.start_s
    if wl.duration_s is not None:
        keep &= full.arrival_s < wl.start_s + wl.duration_s
    idx = np.flatnonzero(keep)[: wl.num_requests]
    picked = full.take(idx)
    arrays = TraceArrays((picked.arrival_s - wl.start_s) * wl.time_scale, picked.prompt_tokens,
                         picked.output_tokens, picked.prefix_blocks)
    if streams is not None:
        arrays = spread(arrays, wl.spread_s * wl.time_scale, streams.get("trace_spread"))
        arrays = scale_rate(arrays, wl.rate_scale, streams.get("trace_rate"))
    return arrays


def fitted_no_span(trace: TraceArrays) -> str:
    """Why a trace whose requests all arrive at one instant cannot be fitted."""
    which = "its one request arrives" if len(trace) == 1 else f"all {len(trace)} requests arrive at the same time"
    return f"{which}: a fit needs requests spread over time (replay the file with type: trace instead)"


def fitted_arrays(wl: FittedWorkload, streams: Streams) -> TraceArrays:
    """Arrivals fitted window by window to a trace, over the trace's span, with (prompt, output) pairs resampled
    from it."""
    trace = read_trace(wl.format, wl.path, **wl.reader_options())
    if trace.arrival_s[-1] <= 0:
        raise TraceError(wl.path, 0, fitted_no_span(trace))
    times = renewal_arrivals(fit_trace(trace, wl.window_s), streams.get("arrivals"), wl.rate_scale)
    pick = streams.get("lengths").integers(len(trace), size=len(times))
    return TraceArrays(times, trace.prompt_tokens[pick], trace.output_tokens[pick])


def servegen_empty_window(wl: ServeGenWorkload, clients: list) -> str | None:
    """Why ``wl``'s time window holds no request of ``clients`` (None: it holds some)."""
    if sum(expected_arrivals(c.windows, wl.start_s, wl.start_s + wl.duration_s) for c in clients) > 0:
        return None
    busy = [(s, s + c.windows.window_s) for c in clients
            for s, r in zip(c.windows.start_s, c.windows.rate_per_s, strict=True) if r > 0]
    when = (f"the clients send requests between {min(a for a, _ in busy):g} s and {max(b for _, b in busy):g} s"
            if busy else "every rate of the clients is 0")
    return f"the window from start_s={wl.start_s:g} s lasting duration_s={wl.duration_s:g} s holds no request ({when})"


def servegen_arrays(wl: ServeGenWorkload, streams: Streams) -> TraceArrays:
    """Every ServeGen client's arrivals and lengths in ``[start_s, start_s + duration_s)``, merged, re-based to 0.

    A time window where no client sends anything is an error, as a trace's window without a request is.
    """
    clients = read_servegen(wl.path, list(wl.clients) if wl.clients is not None else None)
    empty = servegen_empty_window(wl, clients)
    if empty:
        raise TraceError(wl.path, 0, empty)
    parts = []
    for client in clients:
        times = renewal_arrivals(client.windows, streams.get(f"servegen.{client.client}.arrivals"), wl.rate_scale)
        times = times[(times >= wl.start_s) & (times < wl.start_s + wl.duration_s)]
        prompts, outputs = client.sample_lengths(times, streams.get(f"servegen.{client.client}.lengths"))
        parts.append((times - wl.start_s, prompts, outputs))
    times = np.concatenate([p[0] for p in parts])
    order = np.argsort(times, kind="stable")
    return TraceArrays(times[order], np.concatenate([p[1] for p in parts])[order],
                       np.concatenate([p[2] for p in parts])[order])


def workload_arrays(wl, streams: Streams) -> TraceArrays:
    """The arrivals and lengths of any workload but closed loop."""
    if isinstance(wl, OpenLoopWorkload):
        return open_loop_arrays(wl, streams)
    if isinstance(wl, FittedWorkload):
        return fitted_arrays(wl, streams)
    if isinstance(wl, ServeGenWorkload):
        return servegen_arrays(wl, streams)
    return trace_arrays(wl, streams)


class ArrivalTimeout(simpy.events.Event):
    """A timeout that fires before the ordinary events of its instant (SimPy's URGENT priority): an arrival
    exactly at a step's end is then always queued before the replica plans its next step, whatever order
    the two events were scheduled in."""

    def __init__(self, env: simpy.Environment, delay: float) -> None:
        super().__init__(env)
        self._ok = True  # triggered, with no value, as simpy.Timeout does
        self._value = None
        env.schedule(self, simpy.events.URGENT, delay)


def replay(env: simpy.Environment, arrays: TraceArrays, dispatch: Dispatch, on_done: Callable[[], None]):
    """SimPy process: dispatch each request at its arrival time, then report that arrivals are over.

    The arrays are turned into Python numbers a block at a time (fast to iterate, small to hold).
    """
    for start in range(0, len(arrays.arrival_s), REPLAY_BLOCK):
        block = slice(start, start + REPLAY_BLOCK)
        times = arrays.arrival_s[block].tolist()
        prompts = arrays.prompt_tokens[block].tolist()
        outputs = arrays.output_tokens[block].tolist()
        if arrays.prefix_blocks is None:
            for t, p, o in zip(times, prompts, outputs, strict=True):
                if t > env.now:
                    yield ArrivalTimeout(env, t - env.now)
                dispatch(p, o, True)
            continue
        for t, p, o, ids in zip(times, prompts, outputs, arrays.prefix_blocks[block], strict=True):
            if t > env.now:
                yield ArrivalTimeout(env, t - env.now)
            dispatch(p, o, True, prefix=ids)
    on_done()


class _RowIndex:
    """Uniform row numbers ``0 .. n - 1`` (a length distribution's ``sample`` interface)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.integers(0, self.n, size=size)


class LengthStream:
    """Draws lengths one at a time from a distribution, sampling in blocks for speed."""

    def __init__(self, dist: LengthDist, rng: np.random.Generator, block: int = 1024) -> None:
        self.dist, self.rng, self.block = dist, rng, block
        self._buf: list[int] = []

    def next(self) -> int:
        if not self._buf:
            self._buf = self.dist.sample(self.rng, self.block).tolist()[::-1]
        return self._buf.pop()


#: One client's requests rejected as they were sent, in a row (no simulated time passes between them), after which a
#: closed loop with no request limit is stopped as stuck.
SPIN_LIMIT = 10_000


class ClosedLoop:
    """``clients`` SimPy processes, each sending a request, waiting for it to end, thinking, and repeating.

    The workload ends after ``num_requests`` requests have been sent in total, or at ``duration_s``, whichever
    comes first; requests already sent run to completion. Client ``i`` starts at ``i x ramp_up_s / clients``.
    """

    def __init__(self, env: simpy.Environment, wl: ClosedLoopWorkload, streams: Streams, dispatch: Dispatch,
                 on_done: Callable[[], None]) -> None:
        self.env, self.wl, self.dispatch, self.on_done = env, wl, dispatch, on_done
        self._rows = None
        if getattr(wl.output_tokens, "paired", False):  # one row per request, both lengths from it
            self._rows = LengthStream(_RowIndex(len(wl.prompt_tokens.values)), streams.get("prompt_tokens"))
        else:
            self.prompts = LengthStream(wl.prompt_tokens, streams.get("prompt_tokens"))
            self.outputs = LengthStream(wl.output_tokens, streams.get("output_tokens"))
        self.sent = 0
        self.active = wl.clients
        for i in range(wl.clients):
            env.process(self.client(i * wl.ramp_up_s / wl.clients))

    def _lengths(self) -> tuple[int, int]:
        if self._rows is not None:
            row = self._rows.next()
            return int(self.wl.prompt_tokens.values[row]), int(self.wl.output_tokens.values[row])
        return self.prompts.next(), self.outputs.next()

    def _more(self) -> bool:
        wl = self.wl
        if wl.num_requests is not None and self.sent >= wl.num_requests:
            return False
        return wl.duration_s is None or self.env.now < wl.duration_s

    def _stuck(self, req: Request) -> FleetsimError:
        return FleetsimError(
            f"workload: the closed loop's requests are rejected as they are sent ({req.reject_reason}) and "
            f"think_time_s is 0, so a client would resend for ever at t={self.env.now:g} s ({SPIN_LIMIT:,} "
            "rejections in a row); give lengths the pools can serve, think_time_s, or num_requests")

    def client(self, start_s: float):
        env = self.env
        timed = False  # whether this send follows a timeout (ramp-up or think time) rather than a finish
        if start_s > 0:
            yield ArrivalTimeout(env, start_s)
            timed = True
        rejected = 0  # this client's requests rejected as sent, in a row: no time passes between them
        while self._more():
            self.sent += 1
            # A send after a timeout fires before the step ends of its instant, like a trace arrival; a send
            # right at a finish comes after them (every step end then was scheduled before the finish).
            req = self.dispatch(*self._lengths(), timed)
            if req.status == "in_flight":
                req.done = env.event()
                yield req.done
                timed = False
                rejected = 0
            elif not self.wl.think_time_s:
                rejected += 1
                if self.wl.num_requests is None and rejected > SPIN_LIMIT:  # only a request limit would end it
                    raise self._stuck(req)
            if self.wl.think_time_s:
                yield ArrivalTimeout(env, self.wl.think_time_s)
                timed = True
        self.active -= 1
        if self.active == 0:
            self.on_done()

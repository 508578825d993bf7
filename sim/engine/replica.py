"""One replica of a model: a SimPy process running engine steps while it has work."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import simpy

from sim.engine.group import DecodeGroup
from sim.engine.prefix_cache import PrefixCache
from sim.engine.request import Request
from sim.engine.scheduler import Scheduler, is_decode
from sim.engine.state import ReplicaState, apply_decode_run, apply_group_run, finish_step, start_step
from sim.errors import InternalError
from sim.metrics.timeseries import PoolMonitor
from sim.perf.shape import BatchShape, PerfModel

#: Bounds on how many steps of a decode run are priced ahead (the run is priced in pieces: an arrival that
#: cuts it wastes at most one piece of pricing; the piece grows while runs go uncut).
MIN_PIECE_STEPS, MAX_PIECE_STEPS = 8, 1024


def decode_step_times_s(perf: PerfModel, n: int, kv_tokens: int, steps: int) -> list[float]:
    """Step times of ``steps`` whole-batch decode steps of ``n`` sequences holding ``kv_tokens`` KV tokens
    (including each one's new token) at the first step: each step adds ``n`` tokens."""
    fast = getattr(perf, "decode_step_times_s", None)
    if fast is not None:
        return fast(n, kv_tokens, steps)
    return [perf.step_time_s(BatchShape((), n, kv_tokens + n * j, n)) for j in range(steps)]


class ReplicaView(NamedTuple):
    """Read-only snapshot of a replica, as routers see it (a named tuple: a router looks at one per candidate
    per request, and a tuple is made three times faster than a frozen dataclass).

    Queue lengths and outstanding counts are exact at any instant. ``kv_free_blocks`` is exact between steps;
    inside a fast-stepped decode run it is the value at the run's start (the run's KV growth is applied when
    it ends), so a KV-aware router should use per-step stepping.
    """

    replica_id: int
    pool: str
    running: int
    waiting: int
    outstanding_requests: int
    outstanding_tokens: int
    kv_free_blocks: int
    kv_total_blocks: int


class Replica:
    """Continuous-batching engine of one replica (``tensor_parallel`` GPUs in lockstep).

    The loop is: ask the scheduler for a plan over the current queues, apply its admissions and preemptions,
    price the batch with the performance model, ``yield`` the step time, then commit tokens and release
    finished requests. Requests that arrive during a step wait for the next one, as in vLLM. An idle replica
    sleeps until :meth:`submit` wakes it.

    With ``fast`` stepping, a run of whole-batch decode steps (the scheduler's
    :meth:`~sim.engine.scheduler.VllmV1Scheduler.decode_run`) is priced at once and waited for with one
    event; an arrival that the scheduler could admit cuts the run at the end of the step in progress, where
    per-step stepping would have admitted it. Both modes apply the same transitions at the same instants.
    """

    def __init__(
        self,
        env: simpy.Environment,
        replica_id: int,
        pool: str,
        scheduler: Scheduler,
        perf: PerfModel,
        total_blocks: int,
        block_size: int,
        max_model_len: int,
        on_finish: Callable[[Request], None],
        monitor: PoolMonitor,
        events: list | None = None,
        fast: bool = True,
        share: tuple[object, int] | None = None,
        prefix_caching: bool = False,
        by_priority: bool = False,
        speculative: tuple | None = None,
    ) -> None:
        self.env = env
        self.replica_id = replica_id
        self.pool = pool
        self.scheduler = scheduler
        self.perf = perf
        self.max_model_len = max_model_len
        self.state = ReplicaState(total_blocks=total_blocks, block_size=block_size)
        self.on_finish = on_finish
        self.monitor = monitor
        self.events = events
        self.outstanding_tokens = 0
        self.busy_s = 0.0
        self.step_end_s = 0.0  # end of the last step started (a clock limit may cut it)
        self._step_start_s = 0.0
        self.steps = 0
        # A replica on a time-sliced or MPS GPU hands each step's work to the GPU ((GPU, position on it), see
        # sim/sharing/slicing.py) and steps one by one: the GPU decides when the work is done.
        self.share = share
        # Speculative decoding: (config, draft perf model or None, generator). Its steps yield a random number of
        # tokens, so it steps one iteration at a time.
        self.speculative = speculative
        self.fast = fast and share is None and speculative is None
        self.prefix_cache = PrefixCache(total_blocks * block_size) if prefix_caching else None
        self.by_priority = by_priority
        # Fast stepping keeps the decoding requests' counters lazy (sim/engine/group.py); the event log needs
        # every request at every step, so a traced run steps them one by one.
        self.group = DecodeGroup(block_size) if self.fast and events is None else None
        self._wake: simpy.Event | None = None
        self._hold = getattr(scheduler, "hold_s", None)  # static batching's wait for a fuller batch
        self._pauses: list = []  # stuns to take at the next step boundary (live migration): (size, taken)
        self._in_run = False  # True while waiting inside a decode run (a pause cuts it even when sealed)
        self.stopped = False  # set by stop(): the process ends at its next resumption
        self._idle_waiters: list[simpy.Event] = []
        self._cuttable = False  # True while a decode run may be cut by an arrival (interrupting the process)
        self._cut_at_tie = False
        self._piece_steps = MIN_PIECE_STEPS
        self._kv_sampled = 0
        # The decode run in progress: (start, step ends, (request id, tokens before the run) per request).
        self._run: tuple[float, list[float], list[tuple[int, int]]] | None = None
        self.process = env.process(self.run())

    def view(self) -> ReplicaView:
        st = self.state
        return ReplicaView(
            self.replica_id,
            self.pool,
            len(st.running),
            len(st.waiting),
            len(st.running) + len(st.waiting),
            self.outstanding_tokens,
            st.free_blocks,
            st.total_blocks,
        )

    def submit(self, req: Request, before_step_ends: bool = False) -> None:
        """Queue ``req`` on this replica (called by the router at the request's arrival).

        ``before_step_ends``: the arrival's event fires before any step that ends at the same instant (trace and
        open-loop arrivals, see :func:`sim.workload.source.replay`), so it joins the step that starts then; a
        closed-loop client, which sends when its last request finished, comes after, and joins the next one.
        A decode run has no event at its inner step ends, so when an arrival cuts it, it applies the same rule.
        """
        req.pool = self.pool
        req.replica_id = self.replica_id
        if self.prefix_cache is not None and req.prefix and not req.generated_tokens:  # not a decode hand-off
            # vLLM always computes at least the last prompt token (its logits give the first output token).
            hits = self.prefix_cache.admit(req.prefix, req.prefix_tokens_per_id)
            req.cached_tokens = req.computed_tokens = min(hits * req.prefix_tokens_per_id, req.prompt_tokens - 1)
        waiting = self.state.waiting
        if self.by_priority and waiting and waiting[-1].priority > req.priority:
            # Priority scheduling: ahead of every waiting request of a lower priority (higher value), behind those
            # of its own; preempted requests at the front keep their places.
            floor = 0
            while floor < len(waiting) and waiting[floor].preemptions:
                floor += 1
            i = len(waiting)
            while i > floor and waiting[i - 1].priority > req.priority:
                i -= 1
            waiting.insert(i, req)
        else:
            waiting.append(req)
        self.outstanding_tokens += req.prompt_tokens + req.output_tokens
        self._report()
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()
        elif self._cuttable:
            self._cuttable = False
            self._cut_at_tie = before_step_ends
            self.process.interrupt()

    def _report(self, busy: bool | None = None, sample_kv: bool = False) -> None:
        """Tell the monitor the queue lengths; KV usage is sampled only where ``sample_kv`` (admissions,
        preemptions, completions), which is where both stepping modes hold the same KV state."""
        st = self.state
        if busy is None:
            busy = bool(st.running)
        if sample_kv:
            self._kv_sampled = st.used_blocks
        self.monitor.update(self.env.now, self.pool, self.replica_id, len(st.running), len(st.waiting),
                            self._kv_sampled, busy)

    def _log(self, plan) -> None:
        now = self.env.now
        for req in plan.preempted:
            self.events.append((now, req.request_id, "preempt", req.generated_tokens))
        for req, n in plan.scheduled:
            kind = "decode" if is_decode(req, n) else "prefill"
            self.events.append((now, req.request_id, kind, n))

    def run(self):
        env, st = self.env, self.state
        while True:
            if not st.running and not st.waiting:
                self._report(busy=False, sample_kv=True)
                for waiter in self._idle_waiters:
                    waiter.succeed()
                self._idle_waiters = []
                self._wake = env.event()
                yield self._wake
                self._wake = None
            if self.stopped:
                return
            if self._pauses:  # a live migration's stun, at this step boundary, sized by the state here
                pauses, self._pauses = self._pauses, []
                if self.group is not None:  # the stun is a gap between tokens the group's step log does not hold
                    self.group.dissolve(st.running)
                stun_s = 0.0
                for size, taken in pauses:
                    s = size(self)
                    taken(s, len(st.running) + len(st.waiting))
                    stun_s += s
                if self.events is not None:
                    for req in (*st.running, *st.waiting):
                        self.events.append((env.now, req.request_id, "stun", 0))
                yield env.timeout(stun_s)
                if self.stopped:
                    return
                continue
            if self._hold is not None:
                hold_s = self._hold(st.running, st.waiting, env.now)
                if hold_s > 0:  # static batching: wait for a fuller batch, or for the oldest request's delay
                    self._wake = env.event()
                    yield env.any_of([self._wake, env.timeout(hold_s)])
                    self._wake = None
                    if self.stopped:
                        return
                    continue
            group = self.group
            if self.fast:
                steps, sealed = self.scheduler.decode_run(st.running, st.waiting, st.free_blocks, group)
                if self.by_priority:
                    sealed = False  # an arrival may jump ahead of a blocked head: any arrival may cut the run
                if steps >= 2:
                    yield from self._decode_run(steps, sealed)
                    if self.stopped:
                        return
                    continue
            plan = self.scheduler.plan(st.running, st.waiting, st.free_blocks, group)
            if plan is None:  # the group cannot be planned as a whole: every request on its own this step
                group.dissolve(st.running)
                plan = self.scheduler.plan(st.running, st.waiting, st.free_blocks)
            if self.events is not None:
                self._log(plan)
            start_step(st, plan, env.now, group)
            if not plan.scheduled and not plan.group_decodes:
                if not plan.preempted:
                    raise InternalError(f"replica {self.replica_id}: scheduler made no progress with work queued")
                continue  # everything was preempted; re-plan at the same instant
            self._report(busy=True, sample_kv=bool(plan.admitted or plan.preempted))
            step_s = self.perf.step_time_s(plan.shape) if self.speculative is None else self._speculative_step_s(plan)
            self.steps += 1
            if self.share is None:
                self.busy_s += step_s
                self.step_end_s = env.now + step_s
                yield env.timeout(step_s)
            else:  # the step ends when the shared GPU has done its work
                started, self.step_end_s = env.now, math.inf
                self._step_start_s = started
                yield self.share[0].run(self.share[1], step_s)
                self.busy_s += env.now - started
                self.step_end_s = env.now
            if self.stopped:
                return  # stopped during the step: its work is lost with the replica
            finished = finish_step(st, plan, env.now, group, step_s,
                                   self._accepted if self.speculative is not None else None)
            if self.events is not None:
                for req, _ in plan.scheduled:
                    if req.last_token_s == env.now and req.generated_tokens:
                        if req.generated_tokens == 1:
                            self.events.append((env.now, req.request_id, "first_token", 1))
                        self.events.append((env.now, req.request_id, "token", req.generated_tokens))
            self._release(finished)

    def _release(self, finished: list[Request]) -> None:
        for req in finished:
            self.outstanding_tokens -= req.prompt_tokens + req.output_tokens
            if self.events is not None:
                self.events.append((self.env.now, req.request_id, "finish", req.generated_tokens))
            self.on_finish(req)
        if finished:
            self._report(sample_kv=True)

    def _decode_run(self, steps: int, sealed: bool):
        """Run up to ``steps`` whole-batch decode steps, priced in pieces, with one event per piece."""
        env, st = self.env, self.state
        n = len(st.running)
        group = self.group
        kv_tokens = (group.kv_tokens() if group is not None else sum(r.computed_tokens for r in st.running)) + n
        t = env.now
        times: list[float] = []
        boundaries: list[float] = []  # end of each step, summed as per-step stepping sums them
        busy_marks: list[float] = []  # busy time once each step is counted: a cut restores one, bit for bit
        if self.events is not None:  # what the event log needs of the run (group stepping is off then)
            self._run = (env.now, boundaries, [(r.request_id, r.generated_tokens) for r in st.running])
        cut = False
        while len(times) < steps and not cut:
            first = len(times)
            piece = decode_step_times_s(self.perf, n, kv_tokens + n * first, min(steps - first, self._piece_steps))
            for step_s in piece:
                t += step_s
                boundaries.append(t)
                self.busy_s += step_s  # counted when the step starts, as per-step stepping does
                busy_marks.append(self.busy_s)
            times += piece
            self.step_end_s = t
            wait = env.timeout(t - env.now)
            self._cuttable = not sealed  # arrivals cut only a run they could join; a pause cuts any run
            self._in_run = True
            try:
                yield wait
            except simpy.Interrupt:
                cut = True
            self._cuttable = self._in_run = False
            if cut:
                # The arrival joins at the end of the step in progress; at a tie with a step end, as per-step
                # stepping orders it (see submit).
                now, tie = env.now, self._cut_at_tie
                keep = next((i + 1 for i in range(first, len(boundaries))
                             if boundaries[i] > now or (tie and boundaries[i] == now)), len(boundaries))
                self.busy_s = busy_marks[keep - 1]
                del times[keep:], boundaries[keep:], busy_marks[keep:]
                self.step_end_s = boundaries[-1]
                if boundaries[-1] > now:
                    yield env.timeout(boundaries[-1] - now)
            if self.stopped:
                return
        self._piece_steps = (max(MIN_PIECE_STEPS, self._piece_steps // 2) if cut
                             else min(MAX_PIECE_STEPS, 2 * self._piece_steps))
        self.steps += len(times)
        self.flush_run_events()
        self._run = None
        if group is not None:
            self._release(apply_group_run(st, group, times, boundaries[-1]))
        else:
            self._release(apply_decode_run(st, boundaries))

    def _speculative_step_s(self, plan) -> float:
        """A step whose decodes each verify their drafted tokens: priced as a chunk of ``k + 1`` tokens over the
        sequence's context (with ``k`` more LM-head rows), plus the drafting."""
        cfg, draft, _ = self.speculative
        k = cfg.num_tokens
        decodes = [req.computed_tokens for req, n in plan.scheduled if is_decode(req, n)]
        if not decodes:
            return self.perf.step_time_s(plan.shape)
        shape = plan.shape
        verify = BatchShape((*shape.prefill_chunks, *((ctx, k + 1) for ctx in decodes)), 0, 0,
                            shape.n_sampled + k * len(decodes))
        drafting = (sum(decode_step_times_s(draft, len(decodes), sum(decodes) + len(decodes), k)) if draft is not None
                    else cfg.draft_step_s)
        return self.perf.step_time_s(verify) + drafting

    def _accepted(self) -> int:
        """Draft tokens accepted before the first rejection (each with probability ``acceptance_rate``)."""
        cfg, _, rng = self.speculative
        accepted = 0
        while accepted < cfg.num_tokens and rng.random() < cfg.acceptance_rate:
            accepted += 1
        return accepted

    def pause(self, size: Callable[[Replica], float], taken: Callable[[float, int], None]) -> None:
        """Stun this replica from its next step boundary (the step in progress, or a decode run's step in progress,
        completes first) for ``size(replica)`` seconds, computed there; ``taken(stun_s, requests_on_it)`` is told."""
        self._pauses.append((size, taken))
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()
        elif self._in_run:
            self._cuttable = self._in_run = False
            # A maintenance timer is scheduled at the start of the run, before any step end of its instant, so
            # per-step stepping sees it at a step ending then: the run is cut there too.
            self._cut_at_tie = True
            self.process.interrupt()

    @property
    def has_work(self) -> bool:
        return bool(self.state.running or self.state.waiting)

    def when_idle(self) -> simpy.Event:
        """An event that fires when the replica next has no request queued or running (at once if it has none)."""
        event = self.env.event()
        if not self.has_work:
            return event.succeed()
        self._idle_waiters.append(event)
        return event

    def stop(self, evict: bool = True) -> list[Request]:
        """End this replica (drained, reclaimed or failed) now: its process ends, and the requests still on it are
        returned reset to their arrival state (they restart from scratch elsewhere; ``interruptions`` counts it).
        A step in progress is lost. ``evict=False`` asserts the replica is empty."""
        self.settle()
        self.flush_run_events(before_s=self.env.now)  # the steps of a decode run in progress that did start
        self._run = None
        out = [*self.state.running, *self.state.waiting]
        if out and not evict:
            raise InternalError(f"replica {self.replica_id} stopped with {len(out)} requests on it")
        self.stopped = True
        self.busy_s = self.busy_until(self.env.now)
        self.step_end_s = self.env.now
        self._cuttable = False
        for req in out:
            req.reset(self.env.now)
        self.state.running.clear()
        self.state.waiting.clear()
        self.state.free_blocks = self.state.total_blocks
        self.outstanding_tokens = 0
        self._report(busy=False, sample_kv=True)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()  # an idle process resumes, sees stopped and ends
        return out

    def busy_until(self, end_s: float) -> float:
        """Seconds this replica had a step in progress, up to ``end_s`` (a clock limit may cut the last step)."""
        if self.step_end_s == math.inf:  # a step on a shared GPU, still waiting for its work
            return self.busy_s + max(0.0, end_s - self._step_start_s)
        return self.busy_s - max(0.0, self.step_end_s - end_s)

    def settle(self) -> None:
        """Bring every request's counters up to date (at the end of a run, before records are taken)."""
        if self.group is not None:
            self.group.dissolve(self.state.running)

    def flush_run_events(self, before_s: float = math.inf) -> None:
        """Write the event log of the decode run in progress (its steps that start by ``before_s``), as
        per-step stepping writes it at each step's start and end; the simulation calls this at a clock limit."""
        if self.events is None or self._run is None:
            return
        start_s, boundaries, ids = self._run
        # A step that ends exactly at a clock limit is still processed by per-step stepping (its event was
        # scheduled before the limit's), so it logs its tokens and the next step's start.
        for i, step_start in enumerate([start_s, *boundaries[:-1]]):
            if step_start > before_s:
                break
            self.events.extend((step_start, rid, "decode", 1) for rid, _ in ids)
            if boundaries[i] <= before_s:
                self.events.extend((boundaries[i], rid, "token", generated + i + 1) for rid, generated in ids)

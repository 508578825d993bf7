"""One replica of a model: a SimPy process running engine steps while it has work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import simpy

from sim.engine.request import Request
from sim.engine.scheduler import Scheduler, is_decode
from sim.engine.state import ReplicaState, finish_step, start_step
from sim.errors import InternalError
from sim.metrics.timeseries import PoolMonitor
from sim.perf.shape import PerfModel


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """Read-only snapshot of a replica, as routers see it."""

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
        self.steps = 0
        self._wake: simpy.Event | None = None
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

    def submit(self, req: Request) -> None:
        """Queue ``req`` on this replica (called by the router at the request's arrival)."""
        req.pool = self.pool
        req.replica_id = self.replica_id
        self.state.waiting.append(req)
        self.outstanding_tokens += req.prompt_tokens + req.output_tokens
        self._report()
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _report(self, busy: bool | None = None) -> None:
        st = self.state
        if busy is None:
            busy = bool(st.running)
        self.monitor.update(self.env.now, self.pool, self.replica_id, len(st.running), len(st.waiting),
                            st.used_blocks, busy)

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
                self._report(busy=False)
                self._wake = env.event()
                yield self._wake
                self._wake = None
            plan = self.scheduler.plan(st.running, st.waiting, st.free_blocks)
            if self.events is not None:
                self._log(plan)
            start_step(st, plan, env.now)
            if not plan.scheduled:
                if not plan.preempted:
                    raise InternalError(f"replica {self.replica_id}: scheduler made no progress with work queued")
                continue  # everything was preempted; re-plan at the same instant
            self._report(busy=True)
            step_s = self.perf.step_time_s(plan.shape)
            self.busy_s += step_s
            self.step_end_s = env.now + step_s
            self.steps += 1
            yield env.timeout(step_s)
            finished = finish_step(st, plan, env.now)
            if self.events is not None:
                for req, _ in plan.scheduled:
                    if req.generated_tokens == 1 and req.first_token_s == env.now:
                        self.events.append((env.now, req.request_id, "first_token", 1))
            for req in finished:
                self.outstanding_tokens -= req.prompt_tokens + req.output_tokens
                if self.events is not None:
                    self.events.append((env.now, req.request_id, "finish", req.generated_tokens))
                self.on_finish(req)
            if finished:
                self._report()

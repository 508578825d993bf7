"""Replica state and the pure transitions that apply a :class:`~sim.engine.scheduler.StepPlan` to it.

A step has two instants: at its start the plan's preemptions, admissions and KV allocations take effect
(:func:`start_step`); at its end the computed tokens are committed, new tokens sampled and finished requests
released (:func:`finish_step`). Keeping both as plain functions of (state, plan, time) is what lets a run of
identical decode steps be applied at once later.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

from sim.engine.group import DecodeGroup
from sim.engine.request import Request
from sim.engine.scheduler import StepPlan


@dataclass(slots=True)
class ReplicaState:
    """The queues and KV-cache occupancy of one replica."""

    total_blocks: int
    block_size: int
    free_blocks: int = -1
    running: list[Request] = field(default_factory=list)
    waiting: deque[Request] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.free_blocks < 0:
            self.free_blocks = self.total_blocks

    @property
    def used_blocks(self) -> int:
        return self.total_blocks - self.free_blocks


def start_step(state: ReplicaState, plan: StepPlan, now_s: float, group: DecodeGroup | None = None) -> None:
    """Apply preemptions, admissions and block allocations of ``plan`` at the step's start (with the decode
    ``group``'s blocks when the plan covers its members)."""
    for req in plan.preempted:
        popped = state.running.pop()
        assert popped is req, "preempted requests leave from the end of the running list"
        state.free_blocks += req.kv_blocks
        req.kv_blocks = 0
        req.computed_tokens = 0
        req.preemptions += 1
        state.waiting.appendleft(req)
    for req in plan.admitted:
        head = state.waiting.popleft()
        assert head is req, "admissions come from the front of the waiting queue"
        state.running.append(req)
        if req.scheduled_s is None:
            req.scheduled_s = now_s
    bs = state.block_size
    free = state.free_blocks
    for req, n in plan.scheduled:
        need = -(-(req.computed_tokens + n) // bs) - req.kv_blocks  # blocks_for, inlined
        if need:
            req.kv_blocks += need
            free -= need
    if plan.group_decodes:
        free -= group.new_blocks(1)
    state.free_blocks = free
    assert free >= 0, "KV blocks over-allocated"


def finish_step(state: ReplicaState, plan: StepPlan, now_s: float, group: DecodeGroup | None = None,
                step_s: float = 0.0, accepted: Callable[[], int] | None = None) -> list[Request]:
    """Commit the step's tokens at its end; return the requests that finished (already released).

    With a decode ``group``, its members (when the plan covers them) take one group step of ``step_s``, and
    decode-ready requests after them join it. With speculative decoding, ``accepted()`` draws how many draft
    tokens a decoding request's step accepted on top of its own token (limited by its output and free KV).
    """
    finished = []
    for req, n in plan.scheduled:
        c = req.computed_tokens = req.computed_tokens + n
        if c == req.prompt_tokens + req.generated_tokens:  # known_tokens, inlined
            if accepted is not None and n == 1 and c > req.prompt_tokens:
                _accept_drafts(state, req, accepted())
            req.generated_tokens += 1
            if req.first_token_s is None:
                req.first_token_s = now_s
            elif now_s - req.last_token_s > req.max_itl_s:
                req.max_itl_s = now_s - req.last_token_s
            req.last_token_s = now_s
            if req.generated_tokens >= req.output_tokens:
                req.finish_s = now_s
                state.free_blocks += req.kv_blocks
                req.kv_blocks = 0
                finished.append(req)
    if plan.group_decodes:
        finished += _release_members(state, group.advance([step_s], now_s))
    if finished:
        done = set(map(id, finished))
        state.running = [r for r in state.running if id(r) not in done]
    if group is not None:
        group.absorb(state.running, now_s)
    return finished


def _accept_drafts(state: ReplicaState, req: Request, drafts: int) -> None:
    """A verified step's accepted draft tokens: computed and generated, as far as the output and KV allow."""
    extra = min(drafts, req.output_tokens - req.generated_tokens - 1)
    while extra > 0:
        need = -(-(req.computed_tokens + extra) // state.block_size) - req.kv_blocks
        if need <= state.free_blocks:
            break
        extra -= 1
    if extra <= 0:
        return
    state.free_blocks -= max(0, -(-(req.computed_tokens + extra) // state.block_size) - req.kv_blocks)
    req.kv_blocks = max(req.kv_blocks, -(-(req.computed_tokens + extra) // state.block_size))
    req.computed_tokens += extra
    req.generated_tokens += extra


def _release_members(state: ReplicaState, members: list[Request]) -> list[Request]:
    """Finish group members that produced their last token at the group's last step end."""
    for req in members:
        req.finish_s = req.last_token_s
        state.free_blocks += req.kv_blocks
        req.kv_blocks = 0
    return members


def apply_group_run(state: ReplicaState, group: DecodeGroup, times_s: list[float], end_s: float) -> list[Request]:
    """:func:`apply_decode_run` for a replica whose running requests are all members of ``group``: the group
    takes the steps at once, and only the members that finish are touched."""
    state.free_blocks -= group.new_blocks(len(times_s))
    assert state.free_blocks >= 0, "KV blocks over-allocated"
    finished = _release_members(state, group.advance(times_s, end_s))
    if finished:
        done = set(map(id, finished))
        state.running = [r for r in state.running if id(r) not in done]
    return finished


def apply_decode_run(state: ReplicaState, boundaries_s: list[float]) -> list[Request]:
    """Apply a run of whole-batch decode steps that ended at ``boundaries_s`` (one end time per step).

    The same transitions as :func:`start_step` and :func:`finish_step` applied once per step to a plan that
    schedules every running request for one decode token (see
    :meth:`~sim.engine.scheduler.VllmV1Scheduler.decode_run`): each request's KV grows by one token per step,
    its blocks grow to hold them, and it samples one token per step. Only the last step can finish requests.

    Returns
    -------
    list of Request
        The requests that finished (already released).
    """
    steps = len(boundaries_s)
    bs = state.block_size
    end_s = boundaries_s[-1]
    first_gap_end = boundaries_s[0]
    # Gaps between tokens inside the run are the step times (as per-step finish_step computes them).
    inner_gap = max((b - a for a, b in pairwise(boundaries_s)), default=0.0)
    finished = []
    free = state.free_blocks
    for req in state.running:
        c = req.computed_tokens = req.computed_tokens + steps
        need = -(-c // bs) - req.kv_blocks
        if need > 0:
            req.kv_blocks += need
            free -= need
        g = req.generated_tokens = req.generated_tokens + steps
        gap = first_gap_end - req.last_token_s
        if inner_gap > gap:
            gap = inner_gap
        if gap > req.max_itl_s:
            req.max_itl_s = gap
        req.last_token_s = end_s
        if g >= req.output_tokens:
            req.finish_s = end_s
            free += req.kv_blocks
            req.kv_blocks = 0
            finished.append(req)
    state.free_blocks = free
    assert state.free_blocks >= 0, "KV blocks over-allocated"
    if finished:
        done = set(map(id, finished))
        state.running = [r for r in state.running if id(r) not in done]
    return finished

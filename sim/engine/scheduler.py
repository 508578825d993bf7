"""Batch formation: which requests run in the next engine step, and who is preempted.

A scheduler is a small class with one decision method, :meth:`plan`, over a read-only view of the replica
(running list, waiting queue, free KV blocks). It returns a :class:`StepPlan` and mutates nothing;
:mod:`sim.engine.state` applies the plan. Registry: :data:`SCHEDULERS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sim.engine.group import DecodeGroup, decode_ready
from sim.engine.request import Request
from sim.perf.shape import BatchShape


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """The engine settings a scheduler needs (named as in vLLM)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    enable_chunked_prefill: bool


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One step's decision.

    ``scheduled`` lists ``(request, new_tokens)`` in execution order: running requests first (in their running
    order), then newly admitted ones. ``preempted`` is in the order they were taken from the end of the running
    list. ``admitted`` are taken from the front of the waiting queue, in order.
    """

    scheduled: tuple[tuple[Request, int], ...]
    preempted: tuple[Request, ...]
    admitted: tuple[Request, ...]
    shape: BatchShape
    group_decodes: int = 0  # members of a DecodeGroup, each decoding one token (not listed in ``scheduled``)


class Scheduler(Protocol):
    def plan(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int,
             group: DecodeGroup | None = None) -> StepPlan | None: ...

    def decode_run(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int,
                   group: DecodeGroup | None = None) -> tuple[int, bool]: ...


def blocks_for(tokens: int, block_size: int) -> int:
    """KV blocks that hold ``tokens`` tokens."""
    return -(-tokens // block_size)


def is_decode(req: Request, new_tokens: int) -> bool:
    """A step's work for ``req`` is a decode (one token after a fully computed prompt), not a prefill chunk."""
    return new_tokens == 1 and req.computed_tokens >= req.prompt_tokens


def batch_shape(scheduled: Sequence[tuple[Request, int]]) -> BatchShape:
    """The work of a scheduled batch, as the performance model sees it (the definition:
    :meth:`VllmV1Scheduler.plan` computes the same inline over running requests, and a test holds it to this)."""
    chunks, n_decodes, decode_kv, sampled = [], 0, 0, 0
    for req, n in scheduled:
        if is_decode(req, n):
            n_decodes += 1
            decode_kv += req.computed_tokens + 1
        else:
            chunks.append((req.computed_tokens, n))
        if req.computed_tokens + n == req.known_tokens:
            sampled += 1
    return BatchShape(tuple(chunks), n_decodes, decode_kv, sampled)


class VllmV1Scheduler:
    """vLLM v1's default policy (FCFS, chunked prefill, preemption by recompute).

    One token budget (``max_num_batched_tokens``) per step. Running requests are served first, in order, each
    with all its uncomputed tokens (one for a decode, a chunk for a prefill) up to the remaining budget. When
    the KV cache cannot hold a running request's new tokens, the *last* running request (the most recently
    admitted) is preempted, its blocks freed, and it goes back to the front of the waiting queue; if that is
    the request being scheduled, scheduling of running requests stops. Waiting requests are admitted in FCFS
    order only if nothing was preempted in this step, while the budget, ``max_num_seqs`` and the KV cache allow;
    the first one that does not fit stops admission (no skipping ahead). Without chunked prefill, a prompt that
    does not fit in the remaining budget waits for the next step.
    """

    def __init__(self, limits: EngineLimits) -> None:
        self.limits = limits

    def plan(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int,
             group: DecodeGroup | None = None) -> StepPlan | None:
        """The next step's plan. With a ``group`` (its members are ``running[:group.size]``, with lazy counters)
        the members are planned as a whole: one decode token each, their new KV blocks counted by the group;
        None if that cannot be exact (the budget does not cover them, or anything would be preempted), and the
        caller dissolves the group and plans again without it."""
        lim = self.limits
        bs = lim.block_size
        budget = lim.max_num_batched_tokens
        free = free_blocks
        scheduled: list[tuple[Request, int]] = []
        preempted: list[Request] = []
        chunks: list[tuple[int, int]] = []
        n_decodes = decode_kv = sampled = 0
        members = group.size if group is not None else 0
        if members:
            need = group.new_blocks(1)
            if members > budget or need > free:
                return None
            free -= need
            budget -= members
            n_decodes = sampled = members
            decode_kv = group.kv_tokens() + members
            queue = list(running[members:])
        else:
            queue = list(running)
        i = 0
        while i < len(queue) and budget > 0:
            req = queue[i]
            c = req.computed_tokens
            n = req.prompt_tokens + req.generated_tokens - c  # uncomputed known tokens (inlined: hot loop)
            if n > budget:
                n = budget
            need = -(-(c + n) // bs) - req.kv_blocks
            if need > free and members:
                return None
            while need > free:
                victim = queue.pop()
                free += victim.kv_blocks
                preempted.append(victim)
                if victim is req:
                    break
            if preempted and preempted[-1] is req:
                break
            free -= need
            scheduled.append((req, n))
            budget -= n
            i += 1
            # The batch's shape, accumulated here rather than in a second pass (batch_shape, inlined).
            prompt = req.prompt_tokens
            if n == 1 and c >= prompt:
                n_decodes += 1
                decode_kv += c + 1
            else:
                chunks.append((c, n))
            if c + n == prompt + req.generated_tokens:
                sampled += 1

        admitted: list[Request] = []
        if not preempted:
            seqs = members + len(queue)
            for req in waiting:
                if budget <= 0 or seqs >= lim.max_num_seqs:
                    break
                n = req.known_tokens - req.computed_tokens
                if not lim.enable_chunked_prefill and n > budget:
                    break
                n = min(n, budget)
                need = blocks_for(req.computed_tokens + n, bs) - req.kv_blocks
                if need > free:
                    break
                free -= need
                budget -= n
                seqs += 1
                admitted.append(req)
                scheduled.append((req, n))
        if admitted:  # few per step: the definition serves
            extra = batch_shape(scheduled[-len(admitted):])
            chunks += extra.prefill_chunks
            n_decodes += extra.n_decodes
            decode_kv += extra.decode_kv_tokens
            sampled += extra.n_sampled
        shape = BatchShape(tuple(chunks), n_decodes, decode_kv, sampled)
        return StepPlan(tuple(scheduled), tuple(preempted), tuple(admitted), shape, members)


    def decode_run(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int,
                   group: DecodeGroup | None = None) -> tuple[int, bool]:
        """How many of the next steps :meth:`plan` would make whole-batch decodes if nothing arrives.

        A whole-batch decode step schedules every running request for exactly one decode token and admits and
        preempts nothing, so consecutive ones differ only in their KV lengths (what lets the replica compute a
        run of them at once). The run ends with the first step in which a request finishes, or before the first
        step whose KV blocks would not fit (a preemption). Admission is blocked for the whole run when it is
        blocked at its first step: the budget and ``max_num_seqs`` do not change, and the free blocks only
        shrink.

        Returns
        -------
        tuple
            (steps, sealed): ``steps`` is 0 when the next step is not a whole-batch decode; ``sealed`` is True
            when a request arriving during the run could not be admitted before it ends either (it would queue
            behind a blocked head, or ``max_num_seqs`` or the budget is reached), so the run need not be cut.
        """
        lim = self.limits
        n = len(running)
        if n == 0 or n > lim.max_num_batched_tokens:
            return 0, False
        if group is not None:
            return self._group_run(n, waiting, free_blocks, group) if group.size == n else (0, False)
        if not decode_ready(running[-1]):  # requests still prefilling sit at the end of the running list
            return 0, False
        bs = lim.block_size
        steps = 1 << 62
        first_need = 0
        for req in running:
            c = req.computed_tokens
            g = req.generated_tokens
            if c != req.prompt_tokens + g - 1 or g == 0:
                return 0, False
            left = req.output_tokens - g
            if left < steps:
                steps = left
            need = -(-(c + 1) // bs) - req.kv_blocks
            if need > 0:
                first_need += need
        if first_need > free_blocks:
            return 0, False  # the first step preempts
        admit, sealed = self._admission_blocked(n, waiting, free_blocks - first_need)
        if not admit:
            return 0, False
        # Each request allocates at most ceil(steps / bs) + 1 blocks in the run: skip the exact count when even
        # that fits (the common case).
        if n * (steps // bs + 2) > free_blocks and self._need(running, steps, bs) > free_blocks:
            lo, hi = 1, steps  # the largest run whose blocks fit: need(lo) fits, need(hi) does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self._need(running, mid, bs) <= free_blocks:
                    lo = mid
                else:
                    hi = mid
            steps = lo
        return steps, sealed

    def _admission_blocked(self, n: int, waiting: Sequence[Request], free_after_decodes: int) -> tuple[bool, bool]:
        """(nothing would be admitted at the next step, nor for the rest of a run that begins there: sealed)."""
        lim = self.limits
        budget_left = lim.max_num_batched_tokens - n
        full = budget_left <= 0 or n >= lim.max_num_seqs
        if waiting and not full:
            head = waiting[0]
            todo = head.known_tokens - head.computed_tokens
            if not (not lim.enable_chunked_prefill and todo > budget_left):
                need = blocks_for(head.computed_tokens + min(todo, budget_left), lim.block_size) - head.kv_blocks
                if need <= free_after_decodes:
                    return False, False  # the head would be admitted at the first step
        return True, full or bool(waiting)

    def _group_run(self, n: int, waiting: Sequence[Request], free_blocks: int, group: DecodeGroup
                   ) -> tuple[int, bool]:
        """:meth:`decode_run` when every running request is a member of ``group``: the same answer from the
        group's aggregates."""
        steps = group.steps_to_first_finish()
        first_need = group.new_blocks(1)
        if first_need > free_blocks:
            return 0, False
        admit, sealed = self._admission_blocked(n, waiting, free_blocks - first_need)
        if not admit:
            return 0, False
        if group.new_blocks(steps) > free_blocks:
            lo, hi = 1, steps
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if group.new_blocks(mid) <= free_blocks:
                    lo = mid
                else:
                    hi = mid
            steps = lo
        return steps, sealed

    @staticmethod
    def _need(running: Sequence[Request], steps: int, block_size: int) -> int:
        """KV blocks that ``steps`` decode steps of every running request allocate in all."""
        total = 0
        for r in running:
            need = -(-(r.computed_tokens + steps) // block_size) - r.kv_blocks
            if need > 0:
                total += need
        return total


SCHEDULERS: dict[str, type[VllmV1Scheduler]] = {
    "vllm_v1": VllmV1Scheduler,
}

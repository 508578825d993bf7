"""Batch formation: which requests run in the next engine step, and who is preempted.

A scheduler is a small class with one decision method, :meth:`plan`, over a read-only view of the replica
(running list, waiting queue, free KV blocks). It returns a :class:`StepPlan` and mutates nothing;
:mod:`sim.engine.state` applies the plan. Registry: :data:`SCHEDULERS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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


class Scheduler(Protocol):
    def plan(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int) -> StepPlan: ...


def blocks_for(tokens: int, block_size: int) -> int:
    """KV blocks that hold ``tokens`` tokens."""
    return -(-tokens // block_size)


def is_decode(req: Request, new_tokens: int) -> bool:
    """A step's work for ``req`` is a decode (one token after a fully computed prompt), not a prefill chunk."""
    return new_tokens == 1 and req.computed_tokens >= req.prompt_tokens


def batch_shape(scheduled: Sequence[tuple[Request, int]]) -> BatchShape:
    """The work of a scheduled batch, as the performance model sees it."""
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

    def plan(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int) -> StepPlan:
        lim = self.limits
        bs = lim.block_size
        budget = lim.max_num_batched_tokens
        queue = list(running)
        free = free_blocks
        scheduled: list[tuple[Request, int]] = []
        preempted: list[Request] = []
        i = 0
        while i < len(queue) and budget > 0:
            req = queue[i]
            n = min(req.known_tokens - req.computed_tokens, budget)
            need = blocks_for(req.computed_tokens + n, bs) - req.kv_blocks
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

        admitted: list[Request] = []
        if not preempted:
            seqs = len(queue)
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
        return StepPlan(tuple(scheduled), tuple(preempted), tuple(admitted), batch_shape(scheduled))


SCHEDULERS: dict[str, type[VllmV1Scheduler]] = {
    "vllm_v1": VllmV1Scheduler,
}

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
    total_blocks: int = 0  # the replica's KV blocks (read by policies that reserve a request's whole length)
    batch_delay_s: float = 0.0  # static batching: how long the oldest queued request may wait for a fuller batch


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

    #: Admit a request only when the KV cache can hold every running request and it to their ends (TensorRT-LLM's
    #: GUARANTEED_NO_EVICT): then nothing is ever preempted.
    reserve_whole = False

    def __init__(self, limits: EngineLimits) -> None:
        self.limits = limits

    def _whole_blocks(self, req: Request) -> int:
        """KV blocks ``req`` still needs to reach its end (its prompt and every output token)."""
        return blocks_for(req.prompt_tokens + req.output_tokens, self.limits.block_size) - req.kv_blocks

    def _headroom(self, running: Sequence[Request]) -> int:
        """KV blocks not reserved by the running requests' whole lengths: ``total - sum of whole lengths`` (every
        allocated block belongs to a running request, so this holds with lazy group counters too)."""
        bs = self.limits.block_size
        return self.limits.total_blocks - sum(-(-(r.prompt_tokens + r.output_tokens) // bs) for r in running)

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
        if not preempted and waiting:
            seqs = members + len(queue)
            headroom = self._headroom(running) if self.reserve_whole else 0
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
                if self.reserve_whole:
                    whole = self._whole_blocks(req)
                    if whole > headroom:
                        break
                    headroom -= whole
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
            return self._group_run(running, waiting, free_blocks, group) if group.size == n else (0, False)
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
        admit, sealed = self._admission_blocked(running, waiting, free_blocks, first_need)
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

    def _admission_blocked(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int,
                           first_need: int) -> tuple[bool, bool]:
        """(nothing would be admitted at the next step, nor for the rest of a run that begins there: sealed).

        ``first_need``: the KV blocks the next step's decodes take first. Admission blocked at the run's first step
        stays blocked: the budget, the sequence count and the reserved headroom do not change, and the free blocks
        only shrink."""
        lim = self.limits
        n = len(running)
        budget_left = lim.max_num_batched_tokens - n
        full = budget_left <= 0 or n >= lim.max_num_seqs
        if waiting and not full and self._admissible(waiting[0], budget_left, free_blocks - first_need,
                                                     self._reserve(running)):
            return False, False  # the head would be admitted at the first step
        return True, full or bool(waiting)

    def _admissible(self, head: Request, budget: int, free_blocks: int, headroom: int | None) -> bool:
        """Whether the scheduler would admit ``head`` with ``budget`` tokens, ``free_blocks`` blocks and (where the
        policy reserves whole lengths) ``headroom`` unreserved blocks left."""
        lim = self.limits
        todo = head.known_tokens - head.computed_tokens
        if not lim.enable_chunked_prefill and todo > budget:
            return False
        need = blocks_for(head.computed_tokens + min(todo, budget), lim.block_size) - head.kv_blocks
        if need > free_blocks:
            return False
        return headroom is None or self._whole_blocks(head) <= headroom

    def _reserve(self, running: Sequence[Request]) -> int | None:
        return self._headroom(running) if self.reserve_whole else None

    def _group_run(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int, group: DecodeGroup
                   ) -> tuple[int, bool]:
        """:meth:`decode_run` when every running request is a member of ``group``: the same answer from the
        group's aggregates."""
        steps = group.steps_to_first_finish()
        first_need = group.new_blocks(1)
        if first_need > free_blocks:
            return 0, False
        admit, sealed = self._admission_blocked(running, waiting, free_blocks, first_need)
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


class NoEvictScheduler(VllmV1Scheduler):
    """TensorRT-LLM's in-flight batching with the GUARANTEED_NO_EVICT capacity scheduler: steps mix context
    (prefill) and generation as vLLM V1's do, but a waiting request is admitted only when the KV blocks not reserved
    for the running requests' whole lengths (prompt + every output token) hold its own whole length; so no request
    is ever preempted. Without context chunking a prompt that does not fit in the step's remaining token budget
    waits for the next step."""

    reserve_whole = True


class PrefillFirstScheduler(VllmV1Scheduler):
    """Prefill-first batching (vLLM V0's default scheduler, TGI's router, SGLang without mixed chunks).

    A step is either a prefill step or a decode step, never both. When a prompt is part-way through its prefill
    (chunked prefill) or a waiting request can be admitted, the step prefills: the unfinished prompts first (in
    running order), then new requests in FCFS order while the token budget, ``max_num_seqs`` and the free KV
    blocks allow (without chunked prefill a whole prompt must fit in the remaining budget; the first that does not
    fit stops admission). The running requests' decoding pauses for that step. Otherwise every running request
    decodes one token, preempting from the end of the running list as vLLM V1 does when the KV cache is short.
    """

    def plan(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int,
             group: DecodeGroup | None = None) -> StepPlan | None:
        prefill = self._prefill_plan(running, waiting, free_blocks, group.size if group is not None else 0)
        if prefill is None:
            return super().plan(running, (), free_blocks, group)
        if group is not None and group.size:
            return None  # the members pause: plan this step without the group (it forms again after a decode)
        return prefill

    def _prefill_plan(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int,
                      members: int) -> StepPlan | None:
        """The prefill step, or None when it would schedule nothing."""
        lim = self.limits
        bs = lim.block_size
        budget, free = lim.max_num_batched_tokens, free_blocks
        scheduled: list[tuple[Request, int]] = []
        for req in running[members:]:
            if decode_ready(req) or budget <= 0:
                continue
            n = min(req.known_tokens - req.computed_tokens, budget)
            need = blocks_for(req.computed_tokens + n, bs) - req.kv_blocks
            if need > free:
                break
            free -= need
            budget -= n
            scheduled.append((req, n))
        admitted: list[Request] = []
        seqs = len(running)
        headroom = self._reserve(running) if waiting else None
        for req in waiting:
            if budget <= 0 or seqs >= lim.max_num_seqs or not self._admissible(req, budget, free, headroom):
                break
            if headroom is not None:
                headroom -= self._whole_blocks(req)
            n = min(req.known_tokens - req.computed_tokens, budget)
            free -= blocks_for(req.computed_tokens + n, bs) - req.kv_blocks
            budget -= n
            seqs += 1
            admitted.append(req)
            scheduled.append((req, n))
        if not scheduled:
            return None
        return StepPlan(tuple(scheduled), (), tuple(admitted), batch_shape(scheduled))

    def _admission_blocked(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int,
                           first_need: int) -> tuple[bool, bool]:
        # A prefill step comes before the decodes: the head is judged with the whole budget and the blocks free now.
        full = len(running) >= self.limits.max_num_seqs
        if waiting and not full and self._admissible(waiting[0], self.limits.max_num_batched_tokens, free_blocks,
                                                     self._reserve(running)):
            return False, False
        return True, full or bool(waiting)


class StaticBatchScheduler(VllmV1Scheduler):
    """Request-level batching (Triton's dynamic batcher): when no batch runs, up to ``max_num_seqs`` queued requests
    start together (whole prompts within the token budget, each with KV blocks for its whole length) and the batch
    runs until its last request ends; requests that end early leave it, and nothing joins it. An idle replica waits
    up to ``batch_delay_s`` after its oldest queued request arrived for the batch to fill (:meth:`hold_s`)."""

    reserve_whole = True

    def plan(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int,
             group: DecodeGroup | None = None) -> StepPlan | None:
        return super().plan(running, () if running else waiting, free_blocks, group)

    def hold_s(self, running: Sequence[Request], waiting: Sequence[Request], now_s: float) -> float:
        """How long an idle replica waits before it starts a batch of the requests queued now."""
        lim = self.limits
        if running or not waiting or len(waiting) >= lim.max_num_seqs or lim.batch_delay_s <= 0:
            return 0.0
        return max(0.0, waiting[0].arrival_s + lim.batch_delay_s - now_s)

    def _admission_blocked(self, running: Sequence[Request], waiting: Sequence[Request], free_blocks: int,
                           first_need: int) -> tuple[bool, bool]:
        return True, True  # a running batch admits nothing until it ends


SCHEDULERS: dict[str, type[VllmV1Scheduler]] = {
    "vllm_v1": VllmV1Scheduler,
    "no_evict": NoEvictScheduler,
    "prefill_first": PrefillFirstScheduler,
    "static": StaticBatchScheduler,
}

"""Lazy accounting of the decoding requests at the front of a replica's running list (fast stepping).

In vLLM's running order, requests that decode come first and those still prefilling sit at the end: a request
joins the running list at its end and prefills until done, and preemption takes from the end. While the token
budget covers them and nothing is preempted, every step gives each decoding request exactly one token, so
their counters all advance together. :class:`DecodeGroup` keeps them lazy: a member's true computed and
generated tokens are its stored ones plus the group steps since it joined (``tick - req.group_tick``). A step
then costs the group O(1), plus the count of members whose next token opens a KV block (kept by residue of
KV length modulo the block size), instead of a pass over every request. Members are brought up to date
("materialised") when they finish, at the end of a run, or all at once when the per-request path must run (a
preemption, or a budget smaller than the group), after which the group forms again.

Per-step stepping (``engine.stepping: iteration``) never uses a group; the equivalence tests hold the two to the
same records.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_right

from sim.engine.request import Request


def decode_ready(req: Request) -> bool:
    """Whether ``req``'s next step is a decode: its prompt and all but its newest token are computed."""
    return req.generated_tokens > 0 and req.computed_tokens == req.prompt_tokens + req.generated_tokens - 1


class DecodeGroup:
    """The first ``size`` requests of a running list, decoding in lockstep with lazy counters.

    Parameters
    ----------
    block_size
        Tokens per KV block.
    """

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.size = 0
        self.tick = 0  # group steps so far
        self.last_end_s = 0.0  # end of the last group step: every member's newest token
        self._residues = [0] * block_size  # members by (computed - tick) mod block size
        self._sum_rel = 0  # sum over members of (computed - tick), constant while they decode together
        self._finishes: list[tuple[int, int, Request]] = []  # (tick of the step that finishes it, order, member)
        self._order = itertools.count()
        # Step durations for max inter-token gaps: a stack of (tick, duration) with durations decreasing, so the
        # longest step after a given tick is the first entry past it.
        self._ticks: list[int] = []
        self._durations: list[float] = []

    # -- queries ---------------------------------------------------------------------------------------------

    def kv_tokens(self) -> int:
        """Total computed tokens of the members."""
        return self._sum_rel + self.size * self.tick

    def new_blocks(self, steps: int) -> int:
        """KV blocks the members allocate over the next ``steps`` group steps (a member opens a block at a step
        that starts with its computed tokens a multiple of the block size)."""
        bs = self.block_size
        full, part = divmod(steps, bs)
        total = full * self.size
        t = self.tick
        residues = self._residues
        for j in range(part):
            total += residues[-(t + j) % bs]
        return total

    def steps_to_first_finish(self) -> int:
        """Group steps until the first member finishes (that step included)."""
        return self._finishes[0][0] - self.tick if self._finishes else 1 << 62

    def _longest_step_after(self, tick: int) -> float:
        i = bisect_right(self._ticks, tick)
        return self._durations[i] if i < len(self._durations) else 0.0

    # -- transitions -----------------------------------------------------------------------------------------

    def join(self, req: Request) -> None:
        """Make ``req`` (decode-ready, up to date, its newest token at :attr:`last_end_s`) the last member."""
        rel = req.computed_tokens - self.tick
        self._residues[rel % self.block_size] += 1
        self._sum_rel += rel
        req.group_tick = self.tick
        heapq.heappush(self._finishes, (self.tick + req.output_tokens - req.generated_tokens, next(self._order), req))
        self.size += 1

    def absorb(self, running: list[Request], now_s: float) -> None:
        """Let decode-ready requests right after the members join, in order (after a step that ended now)."""
        while self.size < len(running):
            req = running[self.size]
            if not decode_ready(req) or req.last_token_s != now_s:
                break
            self.join(req)

    def materialise(self, req: Request) -> None:
        """Bring a member's counters, KV blocks, newest-token time and longest gap up to date."""
        steps = self.tick - req.group_tick
        if steps:
            req.computed_tokens += steps
            req.generated_tokens += steps
            req.kv_blocks = -(-req.computed_tokens // self.block_size)
            gap = self._longest_step_after(req.group_tick)
            if gap > req.max_itl_s:
                req.max_itl_s = gap
            req.last_token_s = self.last_end_s
            req.group_tick = self.tick

    def _leave(self, req: Request) -> None:
        rel = req.computed_tokens - self.tick
        self._residues[rel % self.block_size] -= 1
        self._sum_rel -= rel
        self.size -= 1

    def dissolve(self, running: list[Request]) -> None:
        """Materialise every member and empty the group (before the per-request path runs)."""
        for req in running[:self.size]:
            self.materialise(req)
        self.size = 0
        self._residues = [0] * self.block_size
        self._sum_rel = 0
        self._finishes = []

    def advance(self, durations: list[float], end_s: float) -> list[Request]:
        """The members took ``durations`` more group steps, the last ending at ``end_s``; return the members that
        finished at the last one, materialised and out of the group (their KV blocks still held)."""
        ticks, stack = self._ticks, self._durations
        t = self.tick
        for d in durations:
            t += 1
            while stack and stack[-1] <= d:
                stack.pop()
                ticks.pop()
            stack.append(d)
            ticks.append(t)
        self.tick = t
        self.last_end_s = end_s
        finished = []
        heap = self._finishes
        while heap and heap[0][0] <= t:
            req = heapq.heappop(heap)[2]
            self.materialise(req)
            self._leave(req)
            finished.append(req)
        return finished

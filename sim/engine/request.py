"""Live state of one request inside the simulator (mutable; turned into a frozen record at the end)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, eq=False)
class Request:
    """A request's progress through routing, queueing, prefill and decode.

    Token accounting follows vLLM: ``computed_tokens`` are in the KV cache; the *known* tokens are the prompt
    plus the tokens generated so far. A step that brings ``computed_tokens`` up to the known tokens samples one
    new token. Preemption by recompute resets ``computed_tokens`` to 0 (the generated tokens are kept and are
    recomputed with the prompt).
    """

    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    pool: str | None = None
    replica_id: int = -1
    cls: int = 0  # traffic class (index into the scenario's classes; 0 is the default workload)
    priority: int = 0  # the class's priority (lower first, with priority scheduling)
    prefix: tuple[int, ...] | None = None  # prefix ids (prefix caching), each ``prefix_tokens_per_id`` tokens
    prefix_tokens_per_id: int = 0
    cached_tokens: int = 0  # prompt tokens found in the replica's prefix cache at admission
    computed_tokens: int = 0
    generated_tokens: int = 0
    kv_blocks: int = 0
    scheduled_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float = 0.0
    max_itl_s: float = 0.0  # the longest gap between two consecutive output tokens
    group_tick: int = 0  # fast stepping: the decode group's step count when these counters were last brought up to date
    finish_s: float | None = None
    preemptions: int = 0
    interruptions: int = 0  # times its replica went away under it (drain timeout, spot reclaim, failure)
    lost_s: float = 0.0  # service thrown away by those: each attempt's first scheduling to its replica going away
    reject_reason: str | None = None
    handoff_output: int = 0  # disaggregated serving: the real output length while on a prefill replica (which
    # produces only the first token: ``output_tokens`` is 1 meanwhile); 0 otherwise
    kv_transfer_s: float | None = None  # first token to KV cache arrival at the decode replica (disaggregated)
    prefill_pool: str | None = None  # disaggregated: the pool that computed its prompt and first token
    done: Any = None  # a simpy.Event a closed-loop client waits on

    def reset(self, now_s: float) -> None:
        """Back to the arrival state after its replica went away at ``now_s`` (the restart is counted in
        ``interruptions``, the service thrown away in ``lost_s``); the arrival time is kept, so its latencies include
        the lost time."""
        if self.scheduled_s is not None:
            self.lost_s += now_s - self.scheduled_s
        self.computed_tokens = self.generated_tokens = self.kv_blocks = self.group_tick = self.cached_tokens = 0
        self.scheduled_s = self.first_token_s = self.kv_transfer_s = self.prefill_pool = None
        self.last_token_s = self.max_itl_s = 0.0
        self.replica_id = -1
        self.interruptions += 1

    @property
    def known_tokens(self) -> int:
        return self.prompt_tokens + self.generated_tokens

    @property
    def status(self) -> str:
        if self.finish_s is not None:
            return "finished"
        if self.reject_reason is not None:
            return "rejected"
        return "in_flight"

"""The shape of one engine step: what the performance model prices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BatchShape:
    """One iteration's work, independent of which requests it serves.

    Parameters
    ----------
    prefill_chunks
        ``(cached_tokens, chunk_tokens)`` per prefilling sequence: the chunk attends to the ``cached_tokens``
        already in its KV cache and causally to itself.
    n_decodes
        Sequences decoding one token each.
    decode_kv_tokens
        Sum over the decodes of the KV length each attends to (including its new token).
    n_sampled
        Sequences that produce a token this step (decodes plus prefills that complete their prompt): the rows
        of the LM-head GEMM.
    """

    prefill_chunks: tuple[tuple[int, int], ...] = ()
    n_decodes: int = 0
    decode_kv_tokens: int = 0
    n_sampled: int = 0

    @property
    def num_tokens(self) -> int:
        return sum(chunk for _, chunk in self.prefill_chunks) + self.n_decodes

    @property
    def num_seqs(self) -> int:
        return len(self.prefill_chunks) + self.n_decodes


class PerfModel(Protocol):
    """Prices an engine step in seconds. Pure: the same shape always costs the same."""

    def step_time_s(self, shape: BatchShape) -> float: ...

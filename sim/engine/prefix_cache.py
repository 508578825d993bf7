"""Automatic prefix caching, as vLLM's: a replica keeps the KV blocks of prompts it has seen, keyed by a hash of the
whole prefix up to each block, and a new request skips the prefill of its longest cached prefix.

Modelled at the granularity of the prefix ids a workload gives (Mooncake's ``hash_ids``: 512 tokens per id; the
synthetic shared prefix: one id per KV block). The cache holds at most the replica's KV capacity in tokens and
evicts the least recently used id. Simplifications (stated in the README): a request's blocks enter the cache
when it is queued at the replica (vLLM: once computed), cached blocks still count against the request's own KV
allocation (vLLM shares them), and a preempted request recomputes without a new lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixCache:
    """LRU over prefix ids; ``capacity_tokens`` bounds what it holds."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity_tokens = capacity_tokens
        self.entries: OrderedDict[int, int] = OrderedDict()  # id -> tokens
        self.tokens = 0

    def match(self, ids: Sequence[int]) -> int:
        """How many leading ids of ``ids`` are cached (without touching them)."""
        n = 0
        for i in ids:
            if i not in self.entries:
                break
            n += 1
        return n

    def admit(self, ids: Sequence[int], tokens_per_id: int) -> int:
        """A request with prefix ``ids`` is queued: return its leading hits, then hold all its ids as the most
        recently used (evicting the least recently used beyond capacity)."""
        hits = self.match(ids)
        for i in ids:
            if i in self.entries:
                self.entries.move_to_end(i)
            else:
                self.entries[i] = tokens_per_id
                self.tokens += tokens_per_id
        while self.tokens > self.capacity_tokens and self.entries:
            _, size = self.entries.popitem(last=False)
            self.tokens -= size
        return hits

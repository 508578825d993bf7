"""Routers: which replica receives an arriving request.

Each router is a small class with one decision method, ``route(request, replicas) -> index``, over read-only
:class:`~sim.engine.replica.ReplicaView` snapshots of the eligible replicas. Ties go to the lowest index, so
routing is deterministic except where a router draws from its own random stream. Registry: :data:`ROUTERS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from sim.engine.replica import ReplicaView
from sim.engine.request import Request


class Router(Protocol):
    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int: ...


def _argmin(values) -> int:
    best, best_i = None, 0
    for i, v in enumerate(values):
        if best is None or v < best:
            best, best_i = v, i
    return best_i


class RoundRobin:
    """Cycle through the replicas in order."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._next = 0

    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int:
        i = self._next % len(replicas)
        self._next += 1
        return i


class RandomRouter:
    """Uniformly at random."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int:
        return int(self.rng.integers(len(replicas)))


class LeastOutstanding:
    """Fewest requests queued or running."""

    def __init__(self, rng: np.random.Generator) -> None:
        pass

    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int:
        return _argmin(r.outstanding_requests for r in replicas)


class JoinShortestQueueTokens:
    """Fewest outstanding tokens (prompt plus output of every unfinished request)."""

    def __init__(self, rng: np.random.Generator) -> None:
        pass

    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int:
        return _argmin(r.outstanding_tokens for r in replicas)


class PowerOfTwoChoices:
    """Sample two distinct replicas at random; send to the one with fewer outstanding requests."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int:
        n = len(replicas)
        if n == 1:
            return 0
        # Two distinct indices, uniformly: a, then b from the n - 1 others (cheaper than choice(replace=False)).
        a = int(self.rng.integers(n))
        b = int(self.rng.integers(n - 1))
        b += b >= a
        return a if replicas[a].outstanding_requests <= replicas[b].outstanding_requests else b


class PrefixAffinity:
    """Prefix-aware: the replica holding the longest cached prefix of the request (ties: fewest outstanding), unless
    it has :attr:`MAX_IMBALANCE` more outstanding requests than the least loaded replica, which then gets it. A
    request without prefix ids goes to the least loaded. The replicas' caches are read, never changed."""

    #: How many more outstanding requests than the least loaded replica a cache hit is worth.
    MAX_IMBALANCE = 4

    def __init__(self, rng: np.random.Generator) -> None:
        pass

    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int:
        views = [replicas[i] for i in range(len(replicas))]
        least = _argmin(v.outstanding_requests for v in views)
        if not request.prefix or not hasattr(replicas, "cached_prefix"):
            return least
        hits = [replicas.cached_prefix(i, request.prefix) for i in range(len(views))]
        best = max(hits)
        if best == 0:
            return least
        choice = min((i for i, h in enumerate(hits) if h == best), key=lambda i: (views[i].outstanding_requests, i))
        if views[choice].outstanding_requests > views[least].outstanding_requests + self.MAX_IMBALANCE:
            return least
        return choice


class PoolRules:
    """Which pools a request may go to, before the replica choice: the first matching rule's pools, then a burst
    overflow. One decision method over the request and a read-only view of the ready replicas.

    Parameters
    ----------
    rules, overflow
        The router's ``rules`` and ``overflow`` (:class:`sim.config.RouterConfig`).
    """

    def __init__(self, rules, overflow) -> None:
        self.rules, self.overflow = tuple(rules), tuple(overflow)

    @staticmethod
    def matches(rule, request: Request, cls_name: str, output_tokens: int) -> bool:
        p = request.prompt_tokens
        return ((rule.min_prompt_tokens is None or p >= rule.min_prompt_tokens)
                and (rule.max_prompt_tokens is None or p <= rule.max_prompt_tokens)
                and (rule.min_output_tokens is None or output_tokens >= rule.min_output_tokens)
                and (rule.max_output_tokens is None or output_tokens <= rule.max_output_tokens)
                and (rule.traffic_class is None or cls_name == rule.traffic_class))

    def choose(self, request: Request, cls_name: str, output_tokens: int,
               replicas: Sequence[ReplicaView]) -> set[str] | None:
        """The pools ``request`` may go to (None: any). A rule whose pools have no ready replica here is passed
        over; so is an overflow whose target has none."""
        ready = {v.pool for v in replicas}
        chosen = None
        for rule in self.rules:
            if self.matches(rule, request, cls_name, output_tokens) and ready.intersection(rule.pools):
                chosen = set(rule.pools)
                break
        for over in self.overflow:
            if (chosen is None or over.from_pool in chosen) and over.from_pool in ready:
                waiting = [v.waiting for v in replicas if v.pool == over.from_pool]
                if min(waiting) > over.queue_above and ready.intersection(over.to):
                    return set(over.to)
        return chosen


ROUTERS: dict[str, type] = {
    "round_robin": RoundRobin,
    "random": RandomRouter,
    "least_outstanding": LeastOutstanding,
    "jsq_tokens": JoinShortestQueueTokens,
    "power_of_two": PowerOfTwoChoices,
    "prefix_affinity": PrefixAffinity,
}

"""Heterogeneous scaling: how many replicas each pool of a fleet gets for a demand, by strategy. Pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolOffer:
    """What a pool offers the fleet autoscaler: capacity per replica, bounds, price, and replicas that wait for
    capacity (a stock-out: they count for nothing until their node comes)."""

    name: str
    capacity_rps: float
    min_replicas: int
    max_replicas: int
    usd_per_hour: float  # one replica
    spot: bool = False
    stuck: int = 0
    current: int = 0  # replicas it has now (starting or ready), stuck ones included


def order(offers: Sequence[PoolOffer], strategy: str) -> list[PoolOffer]:
    """The order in which pools grow (and, reversed, shrink)."""
    def cost(o: PoolOffer) -> float:
        return o.usd_per_hour / o.capacity_rps

    if strategy == "priority":
        return list(offers)
    if strategy == "cheapest":
        return sorted(offers, key=cost)
    return sorted(offers, key=lambda o: (not o.spot, cost(o)))  # spot_first


def allocate(demand_rps: float, offers: Sequence[PoolOffer], strategy: str) -> dict[str, int]:
    """Replicas per pool to serve ``demand_rps``: every pool's minimum, then pools in ``strategy`` order, each up to
    its maximum, until the demand is covered. A pool with stuck replicas (no capacity to be had) keeps them, since
    their capacity may still come, but they count for nothing and the pool does not grow meanwhile: the pools after
    it cover the rest (spot first, on-demand fallback)."""
    serving = {o.name: max(0, o.min_replicas - o.stuck) for o in offers}
    need = demand_rps - sum(serving[o.name] * o.capacity_rps for o in offers)
    for o in order(offers, strategy):
        if need <= 1e-12:
            break
        limit = o.max_replicas if not o.stuck else min(o.max_replicas, o.current)
        room = limit - o.stuck - serving[o.name]
        extra = max(0, min(room, math.ceil(need / o.capacity_rps - 1e-9)))
        serving[o.name] += extra
        need -= extra * o.capacity_rps
    return {o.name: serving[o.name] + o.stuck for o in offers}

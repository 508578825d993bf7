"""Routers: valid choices, their documented rules, and their use in a run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim import simulate
from sim.cluster.router import ROUTERS
from sim.engine.replica import ReplicaView
from sim.engine.request import Request
from tests.conftest import scenario

REQ = Request(0, 0.0, 100, 10)


def view(i: int, outstanding: int, tokens: int = 0) -> ReplicaView:
    return ReplicaView(i, "p", outstanding, 0, outstanding, tokens, 10, 10)


@given(st.sampled_from(sorted(ROUTERS)), st.lists(st.integers(0, 50), min_size=1, max_size=20), st.integers(0, 99))
def test_every_router_returns_a_valid_index(name, loads, seed):
    router = ROUTERS[name](np.random.default_rng(seed))
    views = [view(i, n, 10 * n) for i, n in enumerate(loads)]
    for _ in range(5):
        assert 0 <= router.route(REQ, views) < len(views)


def test_round_robin_cycles():
    router = ROUTERS["round_robin"](np.random.default_rng(0))
    views = [view(i, 0) for i in range(3)]
    assert [router.route(REQ, views) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_outstanding_picks_the_minimum_lowest_index_on_ties():
    router = ROUTERS["least_outstanding"](np.random.default_rng(0))
    assert router.route(REQ, [view(0, 3), view(1, 1), view(2, 1)]) == 1


def test_jsq_tokens_uses_tokens_not_requests():
    router = ROUTERS["jsq_tokens"](np.random.default_rng(0))
    assert router.route(REQ, [view(0, 1, 5000), view(1, 3, 300)]) == 1


def test_power_of_two_picks_the_less_loaded_of_its_two_samples():
    router = ROUTERS["power_of_two"](np.random.default_rng(0))
    views = [view(0, 9), view(1, 0)]
    assert all(router.route(REQ, views) == 1 for _ in range(20))


def test_random_is_roughly_uniform():
    router = ROUTERS["random"](np.random.default_rng(0))
    counts = np.bincount([router.route(REQ, [view(i, 0) for i in range(4)]) for _ in range(4000)], minlength=4)
    assert (np.abs(counts - 1000) < 120).all()


@pytest.mark.parametrize("policy", sorted(ROUTERS))
def test_round_robin_and_friends_spread_load_in_a_run(policy):
    res = simulate(scenario({"pools": {"p": {"replicas": 3}}, "router": {"policy": policy},
                             "workload": {"num_requests": 300, "arrival": {"rate_per_s": 50.0}}}), seed=0)
    per_replica = res.requests["replica_id"].value_counts()
    assert set(per_replica.index) == {0, 1, 2}
    assert per_replica.min() > 40

"""Routers: valid choices, their documented rules, and their use in a run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim import simulate
from sim.cluster.router import ROUTERS, PoolRules
from sim.config import Overflow, RouteRule
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


# -- hybrid fleets: rules and overflow (sim.cluster.router.PoolRules) ----------------------------------------------



def _view(i: int, pool: str, waiting: int = 0) -> ReplicaView:
    return ReplicaView(i, pool, 0, waiting, waiting, 0, 100, 100)


def _req(prompt: int, output: int = 10) -> Request:
    return Request(0, 0.0, prompt, output)


RULES = PoolRules(
    [RouteRule(pools=("h100",), min_prompt_tokens=3000), RouteRule(pools=("h100",), min_output_tokens=500),
     RouteRule.model_validate({"pools": ["l40s"], "class": "batch"}), RouteRule(pools=("l4",))],
    [Overflow.model_validate({"from": "l4", "to": ["h100"], "queue_above": 3})])


def test_rules_route_by_shape_and_tenant():
    views = [_view(0, "l4"), _view(1, "l4"), _view(2, "h100"), _view(3, "l40s")]
    assert RULES.choose(_req(4000), "default", 10, views) == {"h100"}  # long prompt
    assert RULES.choose(_req(100), "default", 800, views) == {"h100"}  # long output
    assert RULES.choose(_req(100), "batch", 10, views) == {"l40s"}  # tenant
    assert RULES.choose(_req(100), "default", 10, views) == {"l4"}  # the rest


def test_a_rule_without_ready_replicas_is_passed_over():
    views = [_view(0, "l4"), _view(1, "l40s")]
    assert RULES.choose(_req(4000), "default", 10, views) == {"l4"}  # no H100 ready: the next matching rule
    assert PoolRules([RouteRule(pools=("h100",))], []).choose(_req(1), "default", 1, views) is None  # any pool


def test_overflow_when_every_replica_of_the_pool_is_backed_up():
    busy = [_view(0, "l4", waiting=4), _view(1, "l4", waiting=5), _view(2, "h100")]
    assert RULES.choose(_req(100), "default", 10, busy) == {"h100"}
    one_free = [_view(0, "l4", waiting=4), _view(1, "l4", waiting=3), _view(2, "h100")]
    assert RULES.choose(_req(100), "default", 10, one_free) == {"l4"}  # not every L4 is above 3
    no_target = [_view(0, "l4", waiting=9)]
    assert RULES.choose(_req(100), "default", 10, no_target) == {"l4"}


def test_rules_in_a_simulation_send_long_prompts_to_their_pool():
    from sim import simulate
    from tests.conftest import scenario

    pools = {"small": {"gpu": "l4", "model": "llama-3.1-8b", "precision": "fp8", "engine": {"max_model_len": 4096},
                       "perf": {"model": "constant", "step_s": 0.01}},
             "big": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "engine": {"max_model_len": 4096},
                     "perf": {"model": "constant", "step_s": 0.01}}}
    sc = scenario({"pools": {"p": None, **pools}, "workload": {"num_requests": 200},
                   "router": {"rules": [{"pools": ["big"], "min_prompt_tokens": 100}, {"pools": ["small"]}]}})
    req = simulate(sc, seed=0).requests
    assert (req.loc[req["prompt_tokens"] >= 100, "pool"] == "big").all()
    assert (req.loc[req["prompt_tokens"] < 100, "pool"] == "small").all()


def test_router_rules_name_real_pools_and_classes():
    import pytest

    from sim.errors import ScenarioError
    from tests.conftest import scenario

    with pytest.raises(ScenarioError, match=r"router\.rules\.0: \['gpu'\] not pools"):
        scenario({"router": {"rules": [{"pools": ["gpu"]}]}})
    with pytest.raises(ScenarioError, match=r"router\.rules\.0\.class: 'vip' is not a traffic class"):
        scenario({"router": {"rules": [{"pools": ["p"], "class": "vip"}]}})

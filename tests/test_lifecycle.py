"""Replica lifecycle, nodes and billing (sim/cluster/pool.py, sim/metrics/lifecycle.py): exact event traces of a
scale-up and of a drain, billing arithmetic per granularity, and an HPA-scaled run's timing and conservation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import simulate
from sim.catalog import load_catalog
from sim.cluster.pool import PoolHooks, PoolRuntime
from sim.engine.sizing import weight_bytes
from sim.metrics.cost import cost_by_hour
from sim.metrics.lifecycle import billed_s, state_counts
from sim.rng import Streams
from sim.scaling_config import LifecycleConfig, NodesConfig
from tests.conftest import scenario

MODEL = load_catalog().models["llama-3.2-1b"]
LOAD_S = weight_bytes(MODEL, "bf16") / 1e9 / 2.0  # weights at 2 GB/s

FIXED = {"node_provision_s": {"dist": "fixed", "s": 100}, "image_gb": 10, "image_pull_gb_s": 0.5,
         "weight_load_gb_s": 2.0, "warmup_s": {"dist": "fixed", "s": 30}, "readiness_s": {"dist": "fixed", "s": 5},
         "drain_timeout_s": 20}


class FakeReplica:
    """What a pool needs of a replica: work that ends when the test says so."""

    def __init__(self, env, replica_id):
        self.env, self.replica_id, self.stopped, self.requests = env, replica_id, False, []
        self._idle = []

    @property
    def has_work(self):
        return bool(self.requests)

    def when_idle(self):
        event = self.env.event()
        self._idle.append(event)
        return event

    def finish_all(self):
        self.requests = []
        for event in self._idle:
            event.succeed()

    def stop(self, evict=True):
        self.stopped = True
        out, self.requests = self.requests, []
        return out


def fake_pool(env, gpus_per_node=None, release_after_idle_s=0.0, **lifecycle):
    """A pool of fake replicas; its empty nodes go at once unless ``release_after_idle_s`` says otherwise."""
    plan = SimpleNamespace(name="p", model=MODEL, config=SimpleNamespace(
        lifecycle=LifecycleConfig.model_validate({**FIXED, **lifecycle}),
        nodes=NodesConfig(gpus_per_node=gpus_per_node, release_after_idle_s=release_after_idle_s), tensor_parallel=1,
        gpus_per_replica=1, precision="bf16"))
    made, events = [], []
    hooks = PoolHooks(ready=lambda r: events.append((env.now, "ready", r.replica_id)),
                      unroute=lambda r: events.append((env.now, "unroute", r.replica_id)),
                      give_back=lambda reqs, reason: events.append((env.now, "give_back", tuple(reqs), reason)))

    def make(i):
        made.append(FakeReplica(env, len(made)))
        return made[-1]

    return PoolRuntime(env, plan, make, hooks, Streams(0)), made, events


def trace(pool):
    return [(m.replica.replica_id, t, s) for m in pool.members for t, s in m.log]


def assert_trace(got, expected):
    assert [(r, s) for r, _, s in got] == [(r, s) for r, _, s in expected]
    assert [t for _, t, _ in got] == pytest.approx([t for _, t, _ in expected], abs=1e-9)


def test_scale_up_goes_through_every_phase_at_its_time():
    env = simpy.Environment()
    pool, _, events = fake_pool(env, gpus_per_node=2)
    pool.start_ready(1)  # replica 0 on node 0 (ready, image cached), one GPU free there

    def scaler():
        yield env.timeout(15)
        pool.scale_to(3)

    env.process(scaler())
    env.run(until=1000)
    assert_trace(trace(pool), [
        (0, 0.0, "ready"),
        # Replica 1 takes node 0's free GPU: the image is cached there, so it loads at once.
        (1, 15.0, "load"), (1, 15 + LOAD_S, "warmup"), (1, 45 + LOAD_S, "probe"), (1, 50 + LOAD_S, "ready"),
        # Replica 2 needs a new node: provisioning, then the image pull on the fresh node.
        (2, 15.0, "node"), (2, 115.0, "pull"), (2, 135.0, "load"), (2, 135 + LOAD_S, "warmup"),
        (2, 165 + LOAD_S, "probe"), (2, 170 + LOAD_S, "ready"),
    ])
    ready = [e for e in events if e[1] == "ready"]
    assert [e[2] for e in ready] == [0, 1, 2]
    assert [e[0] for e in ready] == pytest.approx([0.0, 50 + LOAD_S, 170 + LOAD_S])
    assert [(n.node_id, n.start_s, n.end_s) for n in pool.nodes] == [(0, 0.0, None), (1, 15.0, None)]


def test_drain_waits_for_the_work_then_releases_and_requeues_at_the_timeout():
    env = simpy.Environment()
    pool, made, events = fake_pool(env)
    pool.start_ready(3)
    made[1].requests = ["a"]
    made[2].requests = ["b", "c"]

    def scaler():
        yield env.timeout(10)
        pool.scale_to(1)  # the newest two go: replicas 2 and 1
        yield env.timeout(5)
        made[1].finish_all()  # replica 1 empties within the drain timeout

    env.process(scaler())
    env.run(until=100)
    assert_trace(trace(pool), [
        (0, 0.0, "ready"),
        (1, 0.0, "ready"), (1, 10.0, "draining"), (1, 15.0, "released"),
        (2, 0.0, "ready"), (2, 10.0, "draining"), (2, 30.0, "released"),
    ])
    # Replica 2 still had two requests at the 20 s timeout: handed back to be re-queued (no reason).
    assert (30.0, "give_back", ("b", "c"), "") in events
    assert [(n.node_id, n.end_s) for n in pool.nodes] == [(0, None), (1, 15.0), (2, 30.0)]


def test_a_replica_asked_to_go_while_starting_is_released_at_once():
    env = simpy.Environment()
    pool, _, events = fake_pool(env)
    pool.start_ready(1)

    def scaler():
        yield env.timeout(10)
        pool.scale_to(2)
        yield env.timeout(50)
        pool.scale_to(1)  # replica 1 is still provisioning its node

    env.process(scaler())
    env.run(until=500)
    assert trace(pool)[1:] == [(1, 10.0, "node"), (1, 60.0, "released")]
    assert not [e for e in events if e[1] == "ready" and e[2] == 1]
    assert pool.nodes[1].start_s == 10.0 and pool.nodes[1].end_s == 60.0  # billed while provisioning


@pytest.mark.parametrize(("alive", "granularity", "minimum", "billed"), [
    (0.4, 0, 0, 0.4), (0.4, 1, 10, 10.0), (10.2, 1, 10, 11.0), (61.0, 60, 0, 120.0), (59.0, 1, 60, 60.0),
    (3599.5, 3600, 0, 3600.0), (3600.0, 3600, 0, 3600.0), (1.0, 1, 0, 1.0),
])
def test_billing_rounds_up_to_the_granularity_and_a_minimum(alive, granularity, minimum, billed):
    assert billed_s(alive, granularity, minimum) == pytest.approx(billed)


def test_billed_node_time_is_split_by_clock_hour():
    # A node from 3,000 s billed 1,200 s (to 4,200 s) at $2/GPU-h with 4 GPUs: 600 s in hour 0, 600 s in hour 1.
    nodes = pd.DataFrame({"pool": ["p"], "gpu_type": ["l4"], "gpus": [4], "start_s": [3000.0], "end_s": [4200.0],
                          "usd_per_gpu_hour": [2.0]})
    got = cost_by_hour(nodes).set_index("hour")
    assert got.loc[0, "gpu_hours"] == pytest.approx(4 * 600 / 3600)
    assert got["usd"].sum() == pytest.approx(4 * 1200 / 3600 * 2.0)


# ------------------------------------------------------------------------------------------- whole runs

def hpa_pool(**over):
    return {"gpu": "l4", "model": "llama-3.2-1b", "perf": {"model": "kernel"}, "engine": {"max_model_len": 2048},
            "price": {"usd_per_gpu_hour": 1.0}, "lifecycle": FIXED,
            "autoscale": {"policy": "hpa", "max_replicas": 5, "metrics": [{"name": "request_rate", "target": 2.0}]},
            **over}


def step_workload(t_step, low, high, end, out_tokens=(10, 100)):
    return {"type": "open_loop", "duration_s": end, "num_requests": None,
            "arrival": {"process": "piecewise", "times_s": [0, t_step], "rates_per_s": [low, high]},
            "prompt_tokens": {"dist": "uniform", "low": 50, "high": 400},
            "output_tokens": {"dist": "uniform", "low": out_tokens[0], "high": out_tokens[1]}}


def test_a_step_in_load_adds_replicas_after_a_sync_and_a_cold_start_never_before():
    res = simulate(scenario({"workload": step_workload(300, 0.5, 8.0, 900), "pools": {"p": hpa_pool()}}))
    life = res.lifecycle
    starts = life[(life["state"] == "node") & (life["replica_id"] > 0)]
    first_decision = starts["time_s"].min()
    # The rate metric (60 s window) first exceeds 2 req/replica x 1.1 at a sync after the step; syncs are every
    # 15 s, on multiples of 15.
    assert 300 < first_decision <= 300 + 15 + 15 and first_decision % 15 == 0
    cold = 100 + 20 + LOAD_S + 30 + 5  # node, pull, load, warmup, probe (all fixed)
    ready = life[(life["state"] == "ready") & (life["replica_id"] > 0)]
    assert ready["time_s"].min() == pytest.approx(first_decision + cold)
    counts = state_counts(life)
    assert counts[counts["time_s"] < first_decision + cold]["ready"].max() == 1
    # Billing: the new nodes are paid from their provisioning start; cold start is reported as such.
    hours = res.summary["gpu_hours"]
    assert hours["cold_start"] == pytest.approx(len(starts) * cold / 3600, rel=1e-6)
    assert hours["billed"] == pytest.approx(sum(hours[k] for k in ("ready", "cold_start", "draining", "idle")))


def test_scale_from_zero_holds_requests_at_the_gateway_until_a_replica_is_ready():
    pool = hpa_pool(replicas=0, autoscale={"policy": "hpa", "min_replicas": 0, "max_replicas": 2,
                                           "metrics": [{"name": "request_rate", "target": 5.0}]})
    res = simulate(scenario({"workload": step_workload(60, 1.0, 1.0, 120), "pools": {"p": pool}}))
    req = res.requests
    assert (req["status"] == "finished").all()
    cold = 100 + 20 + LOAD_S + 30 + 5
    assert req["first_token_s"].min() > 15 + cold  # the first sync at 15 s, then a whole cold start
    assert req.loc[0, "ttft_s"] > cold


def expected_arrivals(sc, seed, limit) -> int:
    """The requests the workload sends (drawn from the same streams), cut at the clock limit."""
    from sim.workload.source import open_loop_arrays

    times = open_loop_arrays(sc.workload, Streams(seed)).arrival_s
    return int((times < limit).sum()) if limit is not None else len(times)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(high=st.floats(2.0, 12.0), drain=st.floats(0.0, 3.0), fail=st.booleans(),
       limit=st.one_of(st.none(), st.floats(200.0, 700.0)), seed=st.integers(0, 2**16))
def test_every_request_is_accounted_for_under_autoscaling(high, drain, fail, limit, seed):
    lifecycle = {**FIXED, "drain_timeout_s": drain, "on_drain_timeout": "fail" if fail else "requeue",
                 "warmup_s": {"dist": "lognormal", "median_s": 30, "sigma": 0.5}}
    pool = hpa_pool(lifecycle=lifecycle, autoscale={
        "policy": "hpa", "max_replicas": 4, "metrics": [{"name": "concurrency", "target": 4}],
        "behavior": {"scale_down": {"stabilization_window_s": 30,
                                    "policies": [{"type": "percent", "value": 100, "period_s": 15}]}}})
    # High load long enough for new replicas to become ready (cold start ~160 s), then low: they drain with
    # long requests on them, and a short drain timeout cuts some.
    res = simulate(scenario({"workload": step_workload(400, high, 1.0, 700, out_tokens=(100, 800)),
                             "pools": {"p": pool}, "run": {"max_duration_s": limit}}), seed=seed)
    req = res.requests
    s = res.summary["requests"]
    assert s["arrived"] == len(req) == req["request_id"].nunique() == s["finished"] + s["rejected"] + s["in_flight"]
    assert s["arrived"] == expected_arrivals(res.scenario, seed, limit)  # what the workload sent, not the records
    assert set(req.loc[req["status"] == "rejected", "reject_reason"]) <= {"drain_timeout"}
    if not fail:
        assert s["rejected"] == 0
    if limit is None:
        assert s["in_flight"] == 0
    fin = req[req["status"] == "finished"]
    assert (fin["e2e_s"] >= fin["ttft_s"]).all() and (fin["ttft_s"] > 0).all()
    assert res.summary["gpu_hours"]["billed"] >= res.summary["gpu_hours"]["ready"]
    assert not math.isnan(res.summary["cost"]["usd_total"])


def test_spot_reclaim_gives_notice_then_takes_the_node_and_the_pool_replaces_it():
    env = simpy.Environment()
    pool, made, events = fake_pool(env)
    pool.spot = SimpleNamespace(reclaims_per_gpu_hour=1.0, notice_s=120.0, on_reclaim="requeue")
    pool.start_ready(2)
    made[0].requests = ["a", "b"]
    # The reclaim clocks are drawn from the pool's own spot stream, node 0 first.
    draws = Streams(0).get("spot.p")
    t0, t1 = draws.exponential(3600.0), draws.exponential(3600.0)
    first = min(t0, t1)
    lost = 0 if t0 < t1 else 1
    env.run(until=first + 120 + 1)
    log = dict(((r, s), t) for r, t, s in trace(pool))
    assert log[(lost, "draining")] == pytest.approx(first)  # the notice: no new requests
    assert log[(lost, "reclaimed")] == pytest.approx(first + 120)
    assert pool.nodes[lost].end_s == pytest.approx(first + 120) and pool.nodes[lost].ended_by == "reclaimed"
    back = [e for e in events if e[1] == "give_back"]
    if lost == 0:  # what was still running at the deadline is handed back to be re-queued (no reason)
        assert [(e[2], e[3]) for e in back] == [(("a", "b"), "")] and back[0][0] == pytest.approx(first + 120)
    # The replacement starts at the notice, on a new node (the doomed one takes nothing new).
    assert log[(2, "node")] == pytest.approx(first)
    assert pool.members[2].node.node_id == 2


def test_a_provisioning_attempt_can_find_no_capacity_and_back_off():
    env = simpy.Environment()
    pool, _, _ = fake_pool(env)
    pool.nodes_cfg = NodesConfig(stockout_probability=0.5, provision_timeout_s=900, retry_backoff_s=300)
    pool.start_ready(1)
    pool.scale_to(8)
    env.run(until=20_000)
    failed = [n.failed_attempts for n in pool.nodes[1:]]
    assert any(failed) and not all(failed)  # p = 0.5 over seven nodes
    for node in pool.nodes[1:]:
        assert node.start_s == pytest.approx(node.requested_s + node.failed_attempts * 1200)
        member = next(m for m in pool.members if m.node is node)
        assert dict((s, t) for t, s in member.log)["pull"] == pytest.approx(node.start_s + 100)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reclaims=st.floats(5.0, 60.0), mtbf=st.floats(0.02, 0.5), fail=st.booleans(), stockout=st.floats(0, 0.6),
       limit=st.one_of(st.none(), st.floats(300.0, 900.0)), seed=st.integers(0, 2**16))
def test_every_request_is_accounted_for_under_spot_reclaims_and_failures(reclaims, mtbf, fail, stockout, limit,
                                                                          seed):
    on = "fail" if fail else "requeue"
    pool = hpa_pool(replicas=2, spot={"reclaims_per_gpu_hour": reclaims, "notice_s": 30, "on_reclaim": on},
                    failures={"mtbf_gpu_hours": mtbf, "on_failure": on},
                    nodes={"stockout_probability": stockout, "provision_timeout_s": 60, "retry_backoff_s": 30},
                    autoscale={"policy": "hpa", "max_replicas": 4, "metrics": [{"name": "concurrency", "target": 4}]})
    res = simulate(scenario({"workload": step_workload(300, 3.0, 1.0, 600, out_tokens=(50, 400)),
                             "pools": {"p": pool}, "run": {"max_duration_s": limit}}), seed=seed)
    req = res.requests
    s = res.summary["requests"]
    assert s["arrived"] == len(req) == req["request_id"].nunique() == s["finished"] + s["rejected"] + s["in_flight"]
    assert s["arrived"] == expected_arrivals(res.scenario, seed, limit)
    hours = res.summary["gpu_hours"]
    assert hours["billed"] >= hours["ready"] + hours["cold_start"] + hours["draining"] - 1e-9
    assert set(req.loc[req["status"] == "rejected", "reject_reason"]) <= (
        {"spot_reclaimed", "gpu_failure", "drain_timeout"} if fail else {"drain_timeout"})
    if limit is None:
        assert s["in_flight"] == 0
    nodes = res.nodes
    assert (nodes["billed_s"] >= 0).all() and (nodes["end_s"] >= nodes["start_s"]).all()
    assert set(nodes["ended_by"]) <= {"", "released", "reclaimed", "failed"}


def test_replicas_lost_while_starting_are_replaced():
    env = simpy.Environment()
    pool, _, _ = fake_pool(env)
    pool.failures = SimpleNamespace(mtbf_gpu_hours=0.02, on_failure="requeue")  # a node fails every ~72 s
    pool.start_ready(2)
    env.run(until=3000)
    lost_starting = [m for m in pool.members if m.state == "failed" and len(m.log) > 1
                     and m.log[-2][1] in ("pull", "load", "warmup", "probe")]
    assert lost_starting  # the race this guards: a node failing under replicas still starting
    assert len(pool.active()) == 2  # the ReplicaSet count holds


def test_closed_loop_clients_carry_on_after_their_request_is_failed():
    pool = hpa_pool(replicas=2, failures={"mtbf_gpu_hours": 0.05, "on_failure": "fail"})
    del pool["autoscale"]
    wl = {"type": "closed_loop", "clients": 4, "num_requests": 100,
          "prompt_tokens": {"dist": "fixed", "tokens": 200}, "output_tokens": {"dist": "fixed", "tokens": 400}}
    res = simulate(scenario({"workload": wl, "pools": {"p": pool}}), seed=3)
    s = res.summary["requests"]
    assert s["arrived"] == 100 and s["in_flight"] == 0
    assert s["rejected"] > 0 and set(res.requests["reject_reason"].dropna()) == {"gpu_failure"}


def test_a_pool_that_can_never_come_back_ends_the_run_as_stalled():
    # Spot capacity is reclaimed and never found again: requests wait with nothing to serve them.
    pool = hpa_pool(replicas=1, spot={"reclaims_per_gpu_hour": 30.0, "notice_s": 10},
                    nodes={"stockout_probability": 1.0, "provision_timeout_s": 60, "retry_backoff_s": 60})
    del pool["autoscale"]
    res = simulate(scenario({"workload": step_workload(100, 1.0, 1.0, 400, out_tokens=(50, 100)),
                             "pools": {"p": pool}}), seed=1)
    stalled = res.summary["stalled"]
    assert stalled["waiting"] == res.summary["requests"]["in_flight"] > 0
    assert "nothing progressed" in stalled["reason"]


def test_a_rate_metric_reads_the_rate_from_the_start_of_the_run():
    """A steady 4 req/s with a target of 1 per replica and 4 replicas warm from the start: the rate over a window
    longer than the run so far is taken over the run so far, so the first syncs see about 4 req/s and keep the
    fleet (dividing by the whole 60 s window would read 1 req/s at 15 s and drain three replicas)."""
    from sim.autoscale.metrics import observed_rate

    assert observed_rate(60, 60.0, 15.0) == 4.0 and observed_rate(240, 60.0, 120.0) == 4.0
    assert observed_rate(0, 60.0, 0.0) == 0.0
    pool = hpa_pool(replicas=4, autoscale={"policy": "hpa", "min_replicas": 1, "max_replicas": 8,
                                           "metrics": [{"name": "request_rate", "target": 1.0}]})
    wl = step_workload(1000, 4.0, 4.0, 120, out_tokens=(5, 20))
    wl["arrival"] = {"process": "constant", "rate_per_s": 4.0}
    res = simulate(scenario({"workload": wl, "pools": {"p": pool}}))
    drained = res.lifecycle[(res.lifecycle["state"] == "draining") & (res.lifecycle["time_s"] < 60)]
    assert drained.empty, drained

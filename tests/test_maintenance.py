"""Host maintenance (sim/cluster/maintenance.py): exact traces of a passthrough host going down and coming back, and
of a vGPU live migration's stun; rolling schedules; errors."""

from __future__ import annotations

import pytest

from sim import simulate
from sim.errors import ScenarioError
from tests.conftest import scenario

WHOLE = {"gpu": "h100_sxm", "model": "llama-3.1-8b", "engine": {"max_model_len": 4096},
         "perf": {"model": "constant", "step_s": 0.125}}
VGPU = {"gpu": "l4", "model": "llama-3.2-1b", "engine": {"max_model_len": 2048},
        "perf": {"model": "constant", "step_s": 0.125}, "sharing": {"mode": "vgpu", "profile": "L4-12C"}}
TRAFFIC = {"arrival": {"process": "constant", "rate_per_s": 8.0}, "prompt_tokens": {"dist": "fixed", "tokens": 10},
           "output_tokens": {"dist": "fixed", "tokens": 4}}


def run(pools, n, maintenance=None):
    patch = {"workload": {**TRAFFIC, "num_requests": n}, "pools": {"p": None, **pools},
             "router": {"policy": "round_robin"}, "run": {"trace_events": True}}
    if maintenance is not None:
        patch["maintenance"] = maintenance
    return simulate(scenario(patch), seed=0)


def test_a_passthrough_host_goes_down_and_comes_back():
    maint = {"windows": [{"pool": "w", "host": 0, "start_s": 0.3, "duration_s": 1.0}], "restart_s": 0.5}
    res = run({"w": {**WHOLE, "replicas": 2}}, 3, maint)
    req = res.requests.set_index("request_id")
    # Request 0 was on host 0 (round robin): stopped at 0.3 with its first token, routed to replica 1, restarted
    # from scratch in replica 1's next step (0.375).
    assert req.loc[0, ["replica_id", "interruptions", "first_token_s", "finish_s"]].tolist() == [1, 1, 0.5, 0.875]
    # Its latency includes the lost attempt: it arrived at 0.125, was served from 0.125 to 0.3 (lost_s), queued
    # until 0.375.
    assert req.loc[0, ["lost_s", "queue_s", "e2e_s"]].tolist() == pytest.approx([0.175, 0.25, 0.75])
    assert [e for e in res.events if e[1] == 0 and e[2] == "prefill"] == [(0.125, 0, "prefill", 10),
                                                                           (0.375, 0, "prefill", 10)]
    row = res.maintenance.iloc[0]
    assert (row["kind"], row["replicas"], row["requests_requeued"], row["start_s"], row["end_s"]) == (
        "down", 1, 1, 0.3, 1.8)
    # The host is back at 1.8 (window + restart), after the run's end at 0.875: the capacity lost is counted up to
    # the end, 0.875 - 0.3.
    assert res.summary["duration_s"] == pytest.approx(0.875)
    assert row["capacity_lost_replica_s"] == pytest.approx(0.575)
    # The replica is back on the same host, ready after the restart: a later request can use it.
    later = run({"w": {**WHOLE, "replicas": 2}}, 20, maint)
    assert set(later.requests.loc[later.requests["arrival_s"] > 1.8, "replica_id"]) >= {1, 2}
    states = later.lifecycle[later.lifecycle["replica_id"] == 2]["state"].tolist()
    assert states[0] == "load" and "ready" in states


def test_a_vgpu_live_migration_stuns_each_vm_once():
    maint = {"windows": [{"pool": "v", "host": 0, "start_s": 0.3, "duration_s": 60}], "migration_gb_s": 10,
             "switchover_s": 0.2}
    base = run({"v": {**VGPU, "replicas": 2}}, 2)
    res = run({"v": {**VGPU, "replicas": 2}}, 2, maint)
    stuns = [e for e in res.events if e[2] == "stun"]
    assert [e[1] for e in stuns] == [0, 1] and stuns[0][0] == stuns[1][0] > 0.3  # at the next step boundary
    row = res.maintenance.iloc[0]
    assert (row["kind"], row["replicas"], row["requests_requeued"], row["requests_delayed"]) == ("migrated", 2, 0, 2)
    # Nothing is lost: each request finishes later by its VM's stun, switchover + GPU state / bandwidth.
    from sim.catalog import load_catalog
    from sim.engine.sizing import weight_bytes
    weights = weight_bytes(load_catalog().models["llama-3.2-1b"], "bf16")
    per_vm = row["stun_s"] / 2
    assert per_vm > 0.2 + weights / 10e9  # plus the KV blocks in use
    assert (res.requests["interruptions"] == 0).all()
    delay = res.requests["finish_s"] - base.requests["finish_s"]
    assert delay.tolist() == pytest.approx([per_vm, per_vm], abs=1e-3)


def test_rolling_maintenance_takes_one_host_at_a_time():
    maint = {"rolling": {"pools": ["w"], "start_s": 1.0, "duration_s": 2.0, "gap_s": 0.5}, "restart_s": 0.25}
    res = run({"w": {**WHOLE, "replicas": 3}}, 60, maint)
    log = res.maintenance
    assert log["host"].tolist() == [0, 1, 2]
    assert log["start_s"].tolist() == [1.0, 3.5, 6.0]
    assert (log["kind"] == "down").all() and (log["replicas"] == 1).all()
    assert res.summary["maintenance"]["windows"] == 3
    counts = res.summary["requests"]
    assert counts["finished"] == 60  # two replicas always up: nothing is lost


def test_maintenance_errors_name_the_field():
    with pytest.raises(ScenarioError, match=r"maintenance\.windows\.0\.host.*pool w has 2 hosts"):
        run({"w": {**WHOLE, "replicas": 2}}, 2, {"windows": [{"pool": "w", "host": 5, "start_s": 1, "duration_s": 1}]})
    with pytest.raises(ScenarioError, match=r"maintenance\.windows\.0\.pool: 'x' is not a pool"):
        run({"w": {**WHOLE, "replicas": 2}}, 2, {"windows": [{"pool": "x", "start_s": 1, "duration_s": 1}]})


def test_a_stun_gives_the_same_records_in_both_stepping_modes():
    """A MIG migration while a one-sequence decode run is sealed (nothing could join it): the stun still cuts it,
    and is sized at its step boundary in both modes."""
    from tests.test_fast_forward import assert_same, both_modes

    mig = {"gpu": "h100_sxm", "model": "llama-3.1-8b", "engine": {"max_model_len": 4096, "max_num_seqs": 1},
           "perf": {"model": "constant", "step_s": 0.125}, "sharing": {"mode": "mig", "profile": "3g.40gb"},
           "replicas": 1}
    patch = {"workload": {**TRAFFIC, "num_requests": 3, "output_tokens": {"dist": "fixed", "tokens": 40}},
             "pools": {"p": None, "m": mig},
             "maintenance": {"windows": [{"pool": "m", "host": 0, "start_s": 1.0, "duration_s": 60}],
                             "switchover_s": 0.5}}
    assert_same(*both_modes(scenario(patch)))


def test_a_one_host_pool_holds_requests_through_its_window():
    maint = {"windows": [{"pool": "w", "host": 0, "start_s": 0.3, "duration_s": 1.0}], "restart_s": 0.5}
    res = run({"w": {**WHOLE, "replicas": 1}}, 20, maint)
    counts = res.summary["requests"]
    assert counts["rejected"] == 0 and counts["finished"] == 20
    waited = res.requests[(res.requests["arrival_s"] > 0.3) & (res.requests["arrival_s"] < 1.8)]
    assert (waited["first_token_s"] > 1.8).all()  # they waited at the gateway for the host to come back


def test_a_replacement_started_during_the_window_is_not_doubled():
    """With an HPA holding the pool at one replica, the autoscaler's replacement counts: the host restarts none."""
    pool = {**WHOLE, "replicas": 1,
            "autoscale": {"policy": "hpa", "min_replicas": 1, "max_replicas": 1,
                          "metrics": [{"name": "queue_length", "target": 100}], "sync_period_s": 5}}
    maint = {"windows": [{"pool": "w", "host": 0, "start_s": 10.0, "duration_s": 500.0}], "restart_s": 30.0}
    res = run({"w": pool}, 200, maint)
    alive_at_end = res.replicas[res.replicas["end_s"] >= res.summary["duration_s"]]
    assert len(alive_at_end) == 1
    assert res.summary["requests"]["finished"] == 200

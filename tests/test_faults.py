"""Faults inside the simulated fleet at high rates on long runs (issue #10 item 3): spot reclaims, GPU failures and
drain timeouts together, for hours of simulated time. Nothing is lost, every retry is accounted
for (each request's ``interruptions`` against the gateway's own count of requests handed back), and a retried
request's latency includes the work it lost (``lost_s``, from each lost attempt's first scheduling to its replica
going away)."""

from __future__ import annotations

import numpy as np
import pytest

from sim import simulate
from sim.invariants import FAULT_REASONS, violations
from tests.conftest import scenario

HOURS = 2
FAST_LIFECYCLE = {"image_gb": 1.0, "node_provision_s": {"dist": "fixed", "s": 60},
                  "warmup_s": {"dist": "fixed", "s": 20}, "readiness_s": {"dist": "fixed", "s": 5},
                  "drain_timeout_s": 30}


def faulty_fleet(on: str, seed: int = 0):
    """Two pools on a diurnal load for ``HOURS`` hours: spot L4s reclaimed about every 15 GPU-minutes (10 s notice),
    on-demand L4s failing about every 24 GPU-minutes, both autoscaled (so drains time out too). ``on``: what happens
    to the requests on a lost replica (requeue or fail)."""
    common = {"gpu": "l4", "model": "llama-3.2-1b", "engine": {"max_model_len": 2048},
              "perf": {"model": "constant", "step_s": 0.02}, "lifecycle": {**FAST_LIFECYCLE, "on_drain_timeout": on}}
    autoscale = {"policy": "hpa", "min_replicas": 2, "max_replicas": 6,
                 "metrics": [{"name": "concurrency", "target": 8}]}
    return scenario({
        "name": f"faults-{on}",
        "workload": {"type": "open_loop", "num_requests": None, "duration_s": HOURS * 3600.0,
                     "arrival": {"process": "diurnal", "mean_rate_per_s": 4.0, "amplitude": 0.6,
                                 "period_s": HOURS * 1800.0},
                     "prompt_tokens": {"dist": "uniform", "low": 50, "high": 800},
                     "output_tokens": {"dist": "uniform", "low": 100, "high": 1200}},
        "pools": {
            "p": None,
            "spot": {**common, "replicas": 2, "autoscale": autoscale,
                     "spot": {"reclaims_per_gpu_hour": 4.0, "notice_s": 10, "on_reclaim": on}},
            "od": {**common, "replicas": 2, "autoscale": autoscale,
                   "failures": {"mtbf_gpu_hours": 0.4, "on_failure": on}},
        },
        "router": {"policy": "least_outstanding"},
    }), seed


@pytest.fixture(scope="module", params=["requeue", "fail"])
def faulty_run(request):
    sc, seed = faulty_fleet(request.param)
    return request.param, simulate(sc, seed=seed)


def test_nothing_is_lost(faulty_run):
    _, res = faulty_run
    req, s = res.requests, res.summary["requests"]
    assert s["arrived"] == len(req) == req["request_id"].nunique() > 20_000
    assert s["finished"] + s["rejected"] + s["in_flight"] == s["arrived"]
    assert s["in_flight"] == 0  # no clock limit: everything ends
    assert list(req["request_id"]) == list(range(len(req)))


def test_the_faults_really_happened_at_high_rates(faulty_run):
    _, res = faulty_run
    ended = res.nodes["ended_by"].value_counts()
    assert ended.get("reclaimed", 0) >= 15 and ended.get("failed", 0) >= 15
    assert res.summary["requests"]["interrupted"] >= 100


def test_every_retry_is_accounted_for(faulty_run):
    on, res = faulty_run
    req, s = res.requests, res.summary["requests"]
    interrupted = req["interruptions"] > 0
    assert s["restarts"] == int(req["interruptions"].sum()) and s["interrupted"] == int(interrupted.sum())
    rejected = req[req["status"] == "rejected"]
    if on == "requeue":
        # Only what a clock or stall could strand is rejected; the lost requests all restarted and finished.
        assert rejected.empty
        assert (req.loc[interrupted, "status"] == "finished").all()
        assert (req.loc[interrupted, "interruptions"] >= 1).all() and req["interruptions"].max() >= 2
    else:
        # Failed at their first loss, with the reason of the loss.
        assert set(rejected["reject_reason"]) <= set(FAULT_REASONS)
        assert (rejected["interruptions"] >= 1).all()
        assert set(rejected["reject_reason"]) >= {"spot_reclaimed", "gpu_failure"}
    # The run's own invariants (the gateway's count against the requests'), checked again here, pass.
    assert violations(req, res.summary, res.replicas, res.gpus, res.cost_by_hour) == []


def test_retried_latency_includes_the_lost_work(faulty_run):
    on, res = faulty_run
    req = res.requests
    if on == "fail":  # a lost request is failed, with the service it had had
        failed = req[req["status"] == "rejected"]
        assert (failed["lost_s"] >= 0).all() and (failed["lost_s"] > 0).mean() > 0.5
        assert res.summary["requests"]["lost_work_s"] == pytest.approx(float(failed["lost_s"].sum()))
        return
    done = req[(req["status"] == "finished") & (req["interruptions"] > 0)]
    assert len(done) >= 100
    lost = done["lost_s"].to_numpy()
    assert (lost > 0).mean() > 0.5  # most were lost mid-service, not while queued on their replica
    # Arrival is kept across restarts: the queue before the attempt that finished covers every lost attempt, and
    # the end-to-end latency covers that and the whole successful attempt.
    assert (done["queue_s"].to_numpy() >= lost - 1e-9).all()
    assert (done["e2e_s"].to_numpy() >= lost + done["ttft_s"].to_numpy() - done["queue_s"].to_numpy() - 1e-9).all()
    assert (done["e2e_s"] >= done["ttft_s"]).all()
    assert res.summary["requests"]["lost_work_s"] == pytest.approx(float(req["lost_s"].sum()))
    # Uninterrupted requests lose nothing; interrupted ones take longer, on average, than uninterrupted ones.
    clean = req[(req["status"] == "finished") & (req["interruptions"] == 0)]
    assert (clean["lost_s"] == 0).all()
    assert np.median(done["e2e_s"]) > np.median(clean["e2e_s"])


def test_a_broken_retry_count_is_caught():
    """The invariant is not vacuous: a gateway count that disagrees with the requests' is a violation."""
    sc, seed = faulty_fleet("requeue")
    short = sc.model_copy(update={"workload": sc.workload.model_copy(update={"duration_s": 1800.0})})
    res = simulate(short, seed=seed)
    restarts = res.summary["requests"]["restarts"]
    assert restarts > 0
    found = violations(res.requests, res.summary, res.replicas, res.gpus, res.cost_by_hour,
                       {"restarted": restarts - 1, "rejected": 0})
    assert any(v.startswith("retries: requests count") for v in found)
    lost = res.requests.copy()
    row = lost.index[lost["interruptions"] > 0][0]
    lost.loc[row, "lost_s"] = lost.loc[row, "queue_s"] + 1.0
    assert any("queued less than the work it lost" in v for v in violations(
        lost, res.summary, res.replicas, res.gpus, res.cost_by_hour))

"""Traffic classes: several models in one fleet, model-aware routing, per-class SLOs and common random numbers."""

from __future__ import annotations

import numpy as np
import pytest

from sim import simulate
from sim.errors import ScenarioError
from sim.metrics.summary import slo_met
from tests.conftest import scenario

CHAT = {"type": "open_loop", "arrival": {"rate_per_s": 2.0}, "num_requests": 80,
        "prompt_tokens": {"dist": "uniform", "low": 50, "high": 500},
        "output_tokens": {"dist": "uniform", "low": 10, "high": 100}, "model": "llama-3.1-8b"}
SMALL = {**CHAT, "arrival": {"process": "poisson", "rate_per_s": 4.0}, "num_requests": 120, "model": "llama-3.2-1b"}
POOLS = {"p": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "perf": {"model": "kernel"}, "replicas": 2},
         "small": {"gpu": "l4", "model": "llama-3.2-1b", "perf": {"model": "kernel"}, "replicas": 1,
                   "engine": {"max_model_len": 4096}}}


def two_classes(**extra):
    return scenario({"workload": CHAT, "pools": POOLS, "slo": {"ttft_s": 0.5},
                     "classes": [{"name": "small", "workload": SMALL, "slo": {"ttft_s": 0.05, "tpot_s": 0.02}}],
                     **extra})


def test_each_request_goes_to_a_pool_serving_its_model():
    res = simulate(two_classes())
    req = res.requests
    assert (req["status"] == "finished").all()
    assert len(req) == 200 and list(req["class"].cat.categories) == ["default", "small"]
    assert set(req.loc[req["class"] == "default", "pool"]) == {"p"}
    assert set(req.loc[req["class"] == "small", "pool"]) == {"small"}


def test_per_class_slo_attainment_is_recomputed_from_the_records():
    res = simulate(two_classes())
    req = res.requests
    classes = res.summary["classes"]
    for name, targets in (("default", {"ttft_s": 0.5}), ("small", {"ttft_s": 0.05, "tpot_s": 0.02})):
        rows = req[req["class"] == name]
        met = rows["status"].eq("finished")
        for column, target in targets.items():
            met &= ~(rows[column] > target)
        assert classes[name]["slo"]["attainment"] == pytest.approx(met.mean())
        assert classes[name]["slo"]["targets"] == targets
    overall = slo_met(req, {"default": two_classes().slo, "small": two_classes().classes[0].slo})
    assert res.summary["slo"]["attainment"] == pytest.approx(overall.mean())
    # A table read back from a CSV has text columns, not categoricals: the same verdicts.
    plain = req.astype({"status": object, "class": object})
    slos = {"default": two_classes().slo, "small": two_classes().classes[0].slo}
    assert slo_met(plain, slos).tolist() == overall.tolist()


def test_adding_a_class_leaves_the_default_class_arrivals_unchanged():
    alone = simulate(scenario({"workload": {**CHAT, "model": None}, "pools": {"p": POOLS["p"]}}))
    both = simulate(two_classes())
    default = both.requests[both.requests["class"] == "default"]
    np.testing.assert_array_equal(np.sort(default["arrival_s"].to_numpy()), np.sort(alone.requests["arrival_s"]))
    np.testing.assert_array_equal(np.sort(default["prompt_tokens"].to_numpy()),
                                  np.sort(alone.requests["prompt_tokens"].to_numpy()))


def test_a_class_needing_a_model_no_pool_serves_is_an_error():
    with pytest.raises(ScenarioError, match=r"classes\.0\.workload\.model.*llama-2-7b"):
        scenario({"workload": CHAT, "pools": POOLS,
                  "classes": [{"name": "x", "workload": {**SMALL, "model": "llama-2-7b"}}]})
    with pytest.raises(ScenarioError, match="class names must be unique"):
        scenario({"workload": CHAT, "pools": POOLS, "classes": [{"name": "default", "workload": SMALL}]})


def test_priority_scheduling_admits_the_urgent_class_first():
    wl = {**CHAT, "model": None, "arrival": {"process": "poisson", "rate_per_s": 6.0}, "num_requests": 300}
    pool = {"gpu": "l4", "model": "llama-3.1-8b", "precision": "fp8", "perf": {"model": "kernel"}, "replicas": 1,
            "engine": {"max_model_len": 4096, "max_num_seqs": 8}}

    def run(policy):
        res = simulate(scenario({"workload": wl, "pools": {"p": {**pool, "engine": {
            **pool["engine"], "scheduling_policy": policy}}},
            "classes": [{"name": "urgent", "workload": wl, "priority": -1}]}))
        req = res.requests
        return {c: req.loc[req["class"] == c, "queue_s"].mean() for c in ("default", "urgent")}

    fcfs, prio = run("fcfs"), run("priority")
    assert fcfs["urgent"] == pytest.approx(fcfs["default"], rel=0.5)  # the same traffic, the same wait
    assert prio["urgent"] < 0.2 * prio["default"]  # urgent requests jump the queue

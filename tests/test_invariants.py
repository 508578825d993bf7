"""Invariants checked after every run (sim/invariants.py): quiet on real runs, loud on broken tables."""

from __future__ import annotations

import numpy as np
import pytest

from sim import simulate
from sim.errors import InternalError
from sim.invariants import check, violations
from tests.conftest import scenario


@pytest.fixture(scope="module")
def run():
    return simulate(scenario({"pools": {"p": {"replicas": 2}}, "workload": {"num_requests": 200}}), seed=0)


def args(res, requests=None, summary=None, replicas=None):
    return (res.requests if requests is None else requests, res.summary if summary is None else summary,
            res.replicas if replicas is None else replicas, res.gpus, res.cost_by_hour)


def test_a_real_run_breaks_none(run):
    assert violations(*args(run)) == []


def test_broken_tables_are_named(run):
    req = run.requests.copy()
    req.loc[3, "finish_s"] = req.loc[3, "first_token_s"] - 1.0
    req.loc[5, "ttft_s"] = -0.5
    found = violations(*args(run, requests=req))
    assert any("finish before first token for request 3" in f for f in found)
    assert any("negative ttft_s for request 5" in f for f in found)
    summary = {**run.summary, "requests": {**run.summary["requests"], "finished": 1}}
    assert any(f.startswith("conservation") for f in violations(*args(run, summary=summary)))
    rep = run.replicas.copy()
    rep.loc[0, "busy_s"] = rep.loc[0, "end_s"] - rep.loc[0, "start_s"] + 1.0
    assert any("busy longer than it lived" in f for f in violations(*args(run, replicas=rep)))
    dup = run.requests.copy()
    dup.loc[1, "request_id"] = 0
    assert any("appear twice" in f for f in violations(*args(run, requests=dup)))


def test_a_violation_stops_with_scenario_and_seed(run):
    req = run.requests.copy()
    req.loc[0, "e2e_s"] = -np.inf
    with pytest.raises(InternalError, match=r"negative e2e_s .*reproduce with scenario 'tiny', seed 7"):
        check(*args(run, requests=req), "tiny", 7)


def test_the_check_can_be_turned_off_and_runs_by_default():
    sc = scenario({"workload": {"num_requests": 5}})
    assert sc.run.check_invariants
    off = sc.model_copy(update={"run": sc.run.model_copy(update={"check_invariants": False})})
    assert simulate(off).summary["requests"]["finished"] == 5

"""Capacity planning (sim/plan): the analytic capacity, the integer program, and a plan that meets its SLO when
simulated."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from sim.config import ConstantPerf
from sim.perf.step import ConstantStepModel
from sim.plan import Candidate, Planner, adjust, first_cut, load_plan, write_plan
from sim.plan.capacity import Capacity, prefill_time_s, replica_capacity
from sim.plan.config import PlanConfig
from sim.scenario import load_scenario
from sim.simulate import simulate
from sim.sweep import SweepError
from tests.conftest import ROOT, scenario


def test_capacity_is_the_best_batch_of_the_closed_form():
    perf = ConstantStepModel(ConstantPerf(step_s=0.01, per_token_s=2e-4))
    p, o, budget = 300, 50, 128
    cap = replica_capacity(perf, p, o, kv_tokens=10**9, max_num_seqs=64, budget=budget, tpot_target_s=0.02)
    t_p = 3 * 0.01 + 2e-4 * 300  # three chunks of at most 128 tokens
    assert prefill_time_s(perf, p, budget) == pytest.approx(t_p)
    best = (0.0, 0)
    for b in range(1, 65):
        t_d = 0.01 + 2e-4 * b
        lam = b / (o * t_d + b * t_p)
        if t_d / (1 - lam * t_p) > 0.02:
            break
        best = max(best, (lam, b))
    assert (cap.rate_rps, cap.batch) == (pytest.approx(best[0]), best[1])
    assert cap.limited_by == "tpot"
    # The KV cache bounds the batch: 10 sequences of 350 tokens.
    small = replica_capacity(perf, p, o, kv_tokens=3500, max_num_seqs=64, budget=budget, tpot_target_s=None)
    assert (small.batch, small.limited_by) == (10, "kv_cache")


def test_integer_program_picks_the_cheapest_mix():
    sc = scenario({})
    planner = Planner(PlanConfig(scenario="x.yaml", candidates=({"gpu": "a"},), headroom=1.0), sc, "test",
                      rate_rps=5.0)
    planner.candidates = [Candidate("small", {}, 1.0, Capacity(1.0, 1, 0.0, 0.0, "tpot")),
                          Candidate("big", {}, 3.0, Capacity(4.0, 1, 0.0, 0.0, "tpot"))]
    assert first_cut(planner) == {"small": 1, "big": 1}  # $4/h (5 x small is $5, 2 x big $6)
    planner.rate_rps = 8.0
    assert first_cut(planner) == {"small": 0, "big": 2}


def write_plan_file(tmp_path, **fields):
    data = {"name": "p", "scenario": str(ROOT / "configs" / "quickstart.yaml"), "set": {"workload.num_requests": 800},
            "candidates": [{"gpu": "l4", "precision": "fp8"}, {"gpu": "h100_sxm", "precision": "bf16"}],
            "target_attainment": 0.98, **fields}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_plan_meets_its_slo_in_simulation(tmp_path):
    planner = load_plan(write_plan_file(tmp_path))
    assert planner.rate_rps == pytest.approx(6.0, rel=0.1)
    counts, summary, history = adjust(planner, first_cut(planner))
    assert summary["slo"]["attainment"] >= 0.98
    assert history[0]["counts"] == first_cut(planner)
    # No cheaper plan in the history met the target.
    cost = planner.cost(counts)
    assert all(h["attainment"] < 0.98 for h in history if h["usd_per_hour"] < cost)
    path = write_plan(planner, counts, tmp_path / "out")
    again = simulate(load_scenario(path)).summary
    assert again["slo"]["attainment"] == summary["slo"]["attainment"]
    assert {name: pool.replicas for name, pool in load_scenario(path).pools.items()} == {
        k: v for k, v in counts.items() if v}


@pytest.mark.parametrize(("fields", "message"), [
    ({"candidates": [{"precision": "fp8"}]}, r"candidates\.0: needs gpu"),
    ({"candidates": [{"gpu": "l4", "model": "llama-3.1-70b"}]}, r"candidates\.0.*pools\.l4-fp8\.model.*weights"),
    ({"candidates": [{"gpu": "l4"}, {"gpu": "l4"}]}, r"candidates\.1: l4-fp8 is listed twice"),
    ({"candidates": [{"gpu": "l4", "replicas": 5}]}, r"candidates\.0\.replicas: the planner chooses how many"),
    ({"set": {"workload": {"type": "closed_loop", "clients": 4, "num_requests": 10,
                           "prompt_tokens": {"dist": "fixed", "tokens": 10},
                           "output_tokens": {"dist": "fixed", "tokens": 10}}}}, "needs one open-loop"),
    ({"target_attainment": 1.5}, "target_attainment: .*less than or equal to 1"),
])
def test_bad_plans_name_the_file_and_field(tmp_path, fields, message):
    with pytest.raises(SweepError, match=message):
        load_plan(write_plan_file(tmp_path, **fields))


def test_cli_plan_prints_the_candidates_and_the_plan(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sim", "plan", str(write_plan_file(tmp_path)), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "l4-fp8" in proc.stdout and "first cut" in proc.stdout and "meets the target" in proc.stdout
    assert (tmp_path / "o" / "plan.yaml").exists()


def test_a_candidate_too_short_for_the_requests_is_not_planned(tmp_path):
    """Fixed 3,000-token prompts: an L4 limited to 2,048 tokens would reject every request; it gets no capacity."""
    path = write_plan_file(tmp_path, set={"workload.num_requests": 200,
                                          "workload.prompt_tokens": {"dist": "fixed", "tokens": 3000}},
                           candidates=[{"gpu": "l4", "precision": "fp8", "engine": {"max_model_len": 2048}},
                                       {"gpu": "h100_sxm", "precision": "fp8"}], max_iterations=1)
    planner = load_plan(path)
    l4 = next(c for c in planner.candidates if c.name == "l4-fp8")
    assert l4.capacity.rate_rps == 0 and l4.capacity.limited_by.startswith("max_model_len")
    assert first_cut(planner)["l4-fp8"] == 0
    proc = subprocess.run([sys.executable, "-m", "sim", "plan", str(path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr


def test_a_plan_of_some_candidates_gives_the_others_none_and_a_wrong_name_is_named(tmp_path):
    planner = load_plan(write_plan_file(tmp_path))
    names = [c.name for c in planner.candidates]
    sc = planner.scenario({names[0]: 2})
    assert list(sc.pools) == [names[0]] and sc.pools[names[0]].replicas == 2
    assert planner.cost({names[0]: 2}) == planner.cost({names[0]: 2, names[1]: 0})
    with pytest.raises(SweepError, match=r"unknown candidate 'l4-fp9'"):
        planner.scenario({"l4-fp9": 1})

"""Capacity planning (``fleetsim plan``): the cheapest GPU mix that meets the SLOs for a workload.

1. **First cut, analytic**: each candidate's capacity per replica from the kernel model
   (:func:`sim.plan.capacity.replica_capacity`) for the workload's mean lengths and the TPOT target, then an integer
   program (as in Mélange; ``scipy.optimize.milp``): minimise the hourly cost ``sum c_i n_i`` such that
   ``sum capacity_i n_i >= rate / headroom``.
2. **Verify and adjust by simulation**: run the plan on the workload; while the SLO attainment is below the target,
   add the replica that buys the most capacity per dollar; once it is met, take away replicas (the most expensive
   first) while it stays met.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from sim.catalog import load_catalog
from sim.cluster.deploy import plan_pools
from sim.config import ClosedLoopWorkload, Scenario
from sim.errors import ScenarioError, unknown_name
from sim.perf import build_perf_model
from sim.plan.capacity import Capacity, replica_capacity
from sim.plan.config import PlanConfig
from sim.rng import Streams
from sim.scenario import load_scenario_with, validate_scenario
from sim.sweep.files import SweepError, read_study_file
from sim.workload.source import workload_arrays


@dataclass
class Candidate:
    """One GPU choice: its pool settings, hourly price per replica and analytic capacity."""

    name: str
    pool: dict
    usd_per_hour: float
    capacity: Capacity


@dataclass
class Planner:
    config: PlanConfig
    base: Scenario
    source: str
    candidates: list[Candidate] = field(default_factory=list)
    rate_rps: float = 0.0
    mean_prompt: float = 0.0
    mean_output: float = 0.0

    def _counts(self, counts: dict[str, int]) -> dict[str, int]:
        """Replicas per candidate (a candidate left out has none); a name that is no candidate is an error."""
        names = [c.name for c in self.candidates]
        unknown = [k for k in counts if k not in names]
        if unknown:
            raise SweepError(f"{self.source}: plan {counts}: {unknown_name('candidate', unknown[0], names)}")
        return {name: counts.get(name, 0) for name in names}

    def scenario(self, counts: dict[str, int]) -> Scenario:
        """The base scenario with one pool per candidate that has replicas (candidates not in ``counts``: none)."""
        counts = self._counts(counts)
        data = self.base.model_dump(mode="json", by_alias=True)
        data["pools"] = {c.name: {**c.pool, "replicas": counts[c.name]} for c in self.candidates if counts[c.name]}
        data.pop("fleet_autoscale", None)
        return validate_scenario(data, f"{self.source}: plan {counts}")

    def cost(self, counts: dict[str, int]) -> float:
        counts = self._counts(counts)
        return sum(c.usd_per_hour * counts[c.name] for c in self.candidates)


def _name(pool: dict) -> str:
    parts = [str(pool["gpu"]), str(pool.get("precision", "bf16"))]
    tp = pool.get("tensor_parallel", 1)
    return "-".join(parts + ([f"tp{tp}"] if tp != 1 else [])).replace("_", "-")


def load_plan(path: str | Path) -> Planner:
    """Read a planning file, resolve its workload and price and size every candidate."""
    cfg, scenario_path = read_study_file(path, PlanConfig, "planning")
    source = str(path)
    try:
        base = load_scenario_with(scenario_path, dict(cfg.set), f"{source}: set",
                                  values_base=Path(source).resolve().parent)
    except ScenarioError as err:
        raise SweepError(str(err)) from None
    if isinstance(base.workload, ClosedLoopWorkload) or base.classes:
        raise SweepError(f"{source}: scenario: planning needs one open-loop, trace, fitted or servegen workload "
                         "(a closed loop's rate depends on the fleet)")
    model = cfg.model or next(iter(base.pools.values())).model
    template = next(iter(base.pools.values())).model_dump(mode="json", by_alias=True, exclude_none=True)
    for key in ("autoscale", "spot", "failures", "sharing", "replicas", "price", "role"):
        template.pop(key, None)
    arrays = workload_arrays(base.workload, Streams(base.seed))
    if len(arrays) < 2:
        raise SweepError(f"{source}: scenario: the workload has fewer than two requests; nothing to plan for")
    span = float(arrays.arrival_s[-1] - arrays.arrival_s[0])
    planner = Planner(cfg, base, source, rate_rps=(len(arrays) - 1) / span if span > 0 else float("inf"),
                      mean_prompt=float(np.mean(arrays.prompt_tokens)),
                      mean_output=float(np.mean(arrays.output_tokens)))
    catalog = load_catalog(tuple(Path(p) for p in base.catalog_files))
    lengths = arrays.prompt_tokens + arrays.output_tokens
    names = set()
    for i, cand in enumerate(cfg.candidates):
        if "gpu" not in cand:
            raise SweepError(f"{source}: candidates.{i}: needs gpu (and optionally precision, tensor_parallel, ...)")
        if "replicas" in cand:  # the plan's answer, not an input: a count given here would be silently replaced
            raise SweepError(f"{source}: candidates.{i}.replicas: the planner chooses how many; remove it (use "
                             "max_replicas to cap every candidate)")
        pool = {**template, "model": model, **cand}
        name = _name(pool)
        if name in names:
            raise SweepError(f"{source}: candidates.{i}: {name} is listed twice")
        names.add(name)
        one = base.model_copy(update={"pools": {}}).model_dump(mode="json", by_alias=True)
        one["pools"] = {name: {**pool, "replicas": 1}}
        one.pop("fleet_autoscale", None)
        try:
            scenario = validate_scenario(one, f"{source}: candidates.{i}")
        except ScenarioError as err:
            raise SweepError(str(err)) from None
        plan = plan_pools(scenario, catalog, source).pools[name]
        perf = build_perf_model(plan.config, plan.gpu, plan.model, plan.sizing)
        cap = replica_capacity(perf, planner.mean_prompt, planner.mean_output, plan.sizing.kv_tokens,
                               plan.config.engine.max_num_seqs, plan.sizing.max_num_batched_tokens, base.slo.tpot_s)
        fits = float(np.mean(lengths <= plan.sizing.max_model_len))
        if fits < cfg.target_attainment:  # it would reject too many requests as too long to ever meet the target
            cap = Capacity(0.0, 0, float("nan"), cap.prefill_s, f"max_model_len ({100 * fits:.0f}% fit)")
        usd = plan.usd_per_gpu_hour * plan.config.gpus_per_replica
        planner.candidates.append(Candidate(name, pool, usd, cap))
    return planner


def first_cut(planner: Planner) -> dict[str, int]:
    """The integer program: the cheapest counts whose analytic capacity covers the rate over the headroom."""
    cands = [c for c in planner.candidates if c.capacity.rate_rps > 0]
    if not cands:
        raise SweepError(f"{planner.source}: no candidate can serve one request within the TPOT target "
                         f"({planner.base.slo.tpot_s} s) by the analytic model")
    cost = np.array([c.usd_per_hour for c in cands])
    cap = np.array([c.capacity.rate_rps for c in cands])
    need = planner.rate_rps / planner.config.headroom
    limit = planner.config.max_replicas
    res = milp(cost, constraints=LinearConstraint(cap[None, :], lb=need, ub=np.inf), integrality=np.ones(len(cands)),
               bounds=Bounds(0, limit))
    if not res.success:
        raise SweepError(f"{planner.source}: the rate {planner.rate_rps:.3g} req/s needs more than max_replicas "
                         f"({limit}) of every candidate together by the analytic model")
    counts = dict.fromkeys((c.name for c in planner.candidates), 0)
    counts.update({c.name: round(float(x)) for c, x in zip(cands, res.x, strict=True)})
    return counts


def simulate_plan(planner: Planner, counts: dict[str, int]) -> dict:
    from sim.simulate import simulate

    return simulate(planner.scenario(counts)).summary


def adjust(planner: Planner, counts: dict[str, int]) -> tuple[dict[str, int], dict, list[dict]]:
    """Simulate and adjust ``counts`` until the plan is the cheapest found that meets the target (or the iterations
    run out). Returns the final counts, their summary, and the history (one row per simulation)."""
    target = planner.config.target_attainment
    history: list[dict] = []

    def run(c: dict[str, int]) -> dict:
        summary = simulate_plan(planner, c)
        att = summary["slo"]["attainment"] or 0.0
        history.append({"counts": dict(c), "usd_per_hour": planner.cost(c), "attainment": att,
                        "ttft_p99_s": summary["ttft_s"]["p99"], "tpot_p99_s": summary["tpot_s"]["p99"]})
        return summary

    by_value = sorted((c for c in planner.candidates if c.capacity.rate_rps > 0),
                      key=lambda c: c.usd_per_hour / c.capacity.rate_rps)
    summary = run(counts)
    budget = planner.config.max_iterations
    while (summary["slo"]["attainment"] or 0.0) < target and budget > 0:  # grow: the most capacity per dollar
        grow = next((c for c in by_value if counts[c.name] < planner.config.max_replicas), None)
        if grow is None:
            break
        counts = {**counts, grow.name: counts[grow.name] + 1}
        summary = run(counts)
        budget -= 1
    met = (summary["slo"]["attainment"] or 0.0) >= target
    best_counts, best_summary = counts, summary
    for cand in sorted(planner.candidates, key=lambda c: -c.usd_per_hour):  # shrink: the dearest first
        while met and budget > 0 and best_counts[cand.name] > 0 and sum(best_counts.values()) > 1:
            trial = {**best_counts, cand.name: best_counts[cand.name] - 1}
            s = run(trial)
            budget -= 1
            if (s["slo"]["attainment"] or 0.0) >= target:
                best_counts, best_summary = trial, s
            else:
                break
    return best_counts, best_summary, history


def write_plan(planner: Planner, counts: dict[str, int], out: Path) -> Path:
    """The plan as a ready scenario file, ``out/plan.yaml``."""
    import yaml

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "plan.yaml"
    header = (f"# Capacity plan {planner.config.name!r}: {json.dumps({k: v for k, v in counts.items() if v})}, "
              f"${planner.cost(counts):,.2f}/h\n")
    data = planner.scenario(counts).model_dump(mode="json", by_alias=True)
    data["name"] = planner.config.name  # its runs are the plan's, not the base scenario's
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path

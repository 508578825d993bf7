"""Run one simulation: ``simulate(scenario, seed) -> Results``."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from sim.autoscale.runner import SCALING_COLUMNS
from sim.catalog import load_catalog
from sim.cluster import build as build_module
from sim.cluster.build import build
from sim.cluster.deploy import plan_pools
from sim.cluster.maintenance import MAINTENANCE_COLUMNS
from sim.config import Scenario, TraceWorkload
from sim.engine.core import run as run_core
from sim.engine.core import unsupported
from sim.errors import FleetsimError
from sim.invariants import check as check_invariants
from sim.metrics.cost import energy_kwh
from sim.metrics.lifecycle import hourly_cost, idle_node_kwh, lifecycle_frame, nodes_frame, state_gpu_hours
from sim.metrics.monitoring import alerts_frame, monitoring_frame
from sim.metrics.records import empty_frame
from sim.metrics.summary import summarize
from sim.metrics.usage import usage_frames, usage_summary
from sim.metrics.utilisation import utilisation_summary
from sim.results import Results
from sim.rng import Streams
from sim.scenario import load_scenario
from sim.workload.source import trace_arrays

#: Progress callback: ``(simulated_s, requests_done, requests_expected_or_None)``.
Progress = Callable[[float, int, int | None], None]


def _expected_requests(scenario: Scenario) -> int | None:
    """How many requests the workload will send, where that is known in advance (for the progress bar)."""
    total = 0
    for _, wl, _ in scenario.traffic():
        if isinstance(wl, TraceWorkload):
            if wl.rate_scale != 1:
                return None  # known only once drawn
            total += len(trace_arrays(wl))
        elif getattr(wl, "num_requests", None) is not None and getattr(wl, "duration_s", None) is None:
            total += wl.num_requests
        else:
            return None
    return total


def _stalled(fleet) -> None:
    """Nothing is left to happen, yet requests wait (no pool can ever serve them): end the run, marked stalled."""
    fleet.stalled = {"at_s": fleet.env.now, "waiting": len(fleet.pending),
                     "reason": "nothing left to happen while requests wait"}
    fleet.done.succeed(fleet.env.now)


def simulate(
    scenario: Scenario | str | Path,
    seed: int | np.random.SeedSequence | None = None,
    *,
    progress: Progress | None = None,
    spill_dir: str | Path | None = None,
) -> Results:
    """Simulate ``scenario`` and return its :class:`~sim.results.Results`.

    Parameters
    ----------
    scenario
        A :class:`~sim.config.Scenario` or the path of a scenario file.
    seed
        Overrides ``scenario.seed``: an int or a ``SeedSequence`` (e.g. a spawned child for a replication).
    progress
        Called now and then with the simulated time and request counts (the CLI draws a progress bar).
    spill_dir
        Where request records go if the run has more than ``run.spill_after_requests`` of them (overrides
        ``run.spill_dir``; default a temporary folder, removed once the results are gone). Then
        ``Results.requests`` reads them back on access.

    The run ends when every request has finished after the last arrival, or at ``run.max_duration_s``.
    Every request that arrived is in ``Results.requests``: finished, rejected (with a reason) or in flight.
    """
    if not isinstance(scenario, Scenario):
        if not isinstance(scenario, str | os.PathLike):
            raise FleetsimError(f"scenario: give a Scenario or the path of a scenario file, not a "
                                f"{type(scenario).__name__}")
        scenario = load_scenario(scenario)
    if seed is not None and not isinstance(seed, np.random.SeedSequence):
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise FleetsimError(f"seed: {seed!r} is not a non-negative integer or a numpy SeedSequence")
        seed = int(seed)  # a numpy integer too: the summary must serialise to JSON
    if spill_dir is not None and not isinstance(spill_dir, str | os.PathLike):
        raise FleetsimError(f"spill_dir: give a folder path, not a {type(spill_dir).__name__}")
    if progress is not None and not callable(progress):
        raise FleetsimError(f"progress: give a function of (now_s, done, expected), not a {type(progress).__name__}")
    if progress is not None:
        try:  # now, not after the run has been built, with a TypeError from deep inside
            inspect.signature(progress).bind(0.0, 0, 0)
        except TypeError:
            raise FleetsimError(f"progress: {progress!r} cannot be called with (now_s, done, expected)") from None
        except ValueError:  # no signature to read (some builtins): it will tell when called
            pass
    seed = scenario.seed if seed is None else seed
    if isinstance(seed, int) and seed != scenario.seed:
        # The results carry the scenario that ran: written out, it re-runs with the same seed. (A SeedSequence has
        # no place in a scenario file: the summary's seed block records it.)
        scenario = scenario.model_copy(update={"seed": seed})
    catalog = load_catalog(tuple(Path(p) for p in scenario.catalog_files))
    deployment = plan_pools(scenario, catalog, source=scenario.name)
    plans = deployment.pools
    fleet = build(scenario, deployment, Streams(seed), Path(spill_dir) if spill_dir is not None else None)
    env = fleet.env
    limit = scenario.run.max_duration_s
    ends = [fleet.done] if limit is None else [fleet.done, env.timeout(limit)]
    stop = fleet.done if limit is None else env.any_of(ends)
    rescheduled = 0  # SimPy's own re-scheduling of the stop event when env.run returns: not the simulation's
    why_python = unsupported(scenario, fleet)
    core_events = None
    if why_python is None:
        expected = _expected_requests(scenario)
        if progress is not None:
            progress(0.0, 0, expected)
        _, core_events = run_core(fleet, scenario.router.policy, build_module.RECORD_CHUNK, progress, expected)
        if progress is not None:
            progress(fleet.done.value, fleet.arrived, fleet.arrived)
    elif progress is None:
        try:
            env.run(until=stop)
            rescheduled = 1
        except RuntimeError as err:  # SimPy ran out of events before the stop
            if "No scheduled events left" not in str(err):
                raise
            _stalled(fleet)
    else:
        # Stepped by hand, with no event of its own (a slice's timeout would count in simpy_events and could order
        # same-instant events differently): exactly the events of env.run(until=stop), the same results.
        expected = _expected_requests(scenario)
        next_report_s = 0.0
        try:
            while not stop.processed:
                env.step()
                if env.now >= next_report_s:
                    progress(env.now, fleet.arrived - fleet.unfinished, expected)
                    next_report_s = env.now + max(1.0, env.now * 0.05)
        except simpy.core.EmptySchedule:  # as env.run's "No scheduled events left"
            _stalled(fleet)
        progress(env.now, fleet.arrived - fleet.unfinished, expected)
    end_s = fleet.done.value if fleet.done.triggered else float(limit)
    if fleet.events is not None:
        for replica in fleet.replicas:
            replica.flush_run_events(before_s=end_s)  # a decode run the clock cut: its started steps
        fleet.events.sort(key=lambda event: event[0])  # fast stepping writes a decode run when it ends

    gpu_of_pool = fleet.gpu_of_pool
    fleet.flush_records(fleet.in_flight())
    empty = empty_frame(gpu_of_pool, fleet.class_names)
    kept = fleet.records.kept(empty)
    if not fleet.records.spilled:  # records arrive in completion order; the table is in arrival order
        kept = kept.sort_values("request_id", kind="stable", ignore_index=True)
    replicas, gpus = usage_frames(fleet, end_s)
    nodes = nodes_frame(fleet, end_s)
    hourly = hourly_cost(replicas, nodes, state_gpu_hours(fleet, end_s, dict(zip(
        replicas["replica_id"], replicas["gpus"], strict=True))))
    summary = summarize(kept, hourly, {n: p.price_label for n, p in plans.items()},
                        scenario.slo if not scenario.classes else {name: slo for name, _, slo in scenario.traffic()},
                        end_s,
                        energy_kwh(replicas) + idle_node_kwh(replicas, nodes))
    seed_info = seed if not isinstance(seed, np.random.SeedSequence) else {
        "entropy": seed.entropy, "spawn_key": list(seed.spawn_key)}
    summary["seed"] = seed_info
    if fleet.stalled is not None:
        summary["stalled"] = fleet.stalled
    summary["utilisation"] = utilisation_summary(replicas, hourly, summary["requests"]["finished"])
    per_pool, shared = usage_summary(replicas, gpus, end_s)
    for pool, block in per_pool.items():
        summary["pools"][pool]["gpu"] = block
    if shared is not None:
        summary["shared_gpus"] = shared
    summary["scenario"] = scenario.name
    eid = getattr(env, "_eid", None)  # SimPy's event counter (a private attribute; None if it moves)
    summary["engine"] = {"core": "compiled" if why_python is None else "python",
                         **({"python_because": why_python} if why_python is not None else {}),
                         "steps": sum(r.steps for r in fleet.replicas),
                         "simpy_events": next(eid) - rescheduled if eid is not None and core_events is None else None,
                         "core_events": core_events,
                         "records_spilled_to": str(fleet.records.spill_dir) if fleet.records.spilled else None}
    monitor = fleet.monitor
    monitor.finish()
    timeseries = None if monitor.store.spilled else monitor.frame()
    results = Results(scenario, seed_info, None if fleet.records.spilled else kept, timeseries, replicas, hourly,
                      summary, fleet.events, tuple(fleet.records.parts), tuple(monitor.store.parts), gpus, nodes,
                      lifecycle_frame(fleet.pools), pd.DataFrame(fleet.scaling, columns=SCALING_COLUMNS),
                      spill_folders=tuple(s.temp for s in (fleet.records, monitor.store) if s.temp is not None))
    # From here the results alone hold the temporary folders (the fleet is a reference cycle, freed only by the
    # garbage collector): they go as soon as the results do.
    fleet.records.temp = monitor.store.temp = None
    if scenario.run.check_invariants:
        # On the records kept in memory (a spilled run keeps only the summary's columns: bounded memory).
        check_invariants(kept, summary, replicas, gpus, hourly, scenario.name, seed_info, fleet.given_back)
    if fleet.maintenance_log is not None:
        log = pd.DataFrame(fleet.maintenance_log, columns=MAINTENANCE_COLUMNS).sort_values(["start_s", "pool", "host"],
                                                                                        ignore_index=True)
        # A host still down when the run ends shows its planned end; only the capacity lost within the run counts.
        down = log["kind"] == "down"
        log.loc[down, "capacity_lost_replica_s"] = log.loc[down, "replicas"] * (
            log.loc[down, "end_s"].clip(upper=end_s) - log.loc[down, "start_s"]).clip(lower=0.0)
        summary["maintenance"] = {
            "windows": len(log), "replicas_down": int(log.loc[log["kind"] == "down", "replicas"].sum()),
            "replicas_migrated": int(log.loc[log["kind"] == "migrated", "replicas"].sum()),
            "requests_requeued": int(log["requests_requeued"].sum()),
            "requests_delayed": int(log["requests_delayed"].sum()), "stun_s": float(log["stun_s"].sum()),
            "capacity_lost_replica_s": float(log["capacity_lost_replica_s"].sum())}
        results = dataclasses.replace(results, maintenance=log)
    if scenario.monitoring is not None:
        cfg = scenario.monitoring
        monitoring = monitoring_frame(results.timeseries, results.requests, replicas, end_s, cfg.interval_s,
                                      cfg.latency_window_s, fleet.pending_log)
        alerts = alerts_frame(monitoring, cfg.alerts, end_s)
        by_rule = alerts.groupby("alert")["duration_s"]
        fired, firing = by_rule.size(), by_rule.sum()
        summary["alerts"] = {rule.name: {"fired": int(fired.get(rule.name, 0)),
                                         "firing_s": float(firing.get(rule.name, 0.0))} for rule in cfg.alerts}
        results = dataclasses.replace(results, monitoring=monitoring, alerts=alerts)
    return results

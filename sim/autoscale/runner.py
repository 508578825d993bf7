"""Autoscalers in time: each one a SimPy process that wakes on its period, reads the newest visible metrics and
asks its policy (a pure decision, e.g. :class:`~sim.autoscale.hpa.Hpa`) for the pool's replica count.

Every decision is logged as rows of :data:`SCALING_COLUMNS`, one per metric: the metric's value and proposal,
the replicas counted, and the decision.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from sim.autoscale.fleet import PoolOffer, allocate
from sim.autoscale.hpa import Direction, Hpa, PodSample, RatePolicy, external_proposal, pods_proposal
from sim.autoscale.kpa import Kpa
from sim.autoscale.metrics import Scraper, observed_rate
from sim.autoscale.predictive import bucket_rates, holt_forecast, replicas_for
from sim.scaling_config import (
    FleetAutoscaleConfig,
    HpaConfig,
    KedaConfig,
    KpaConfig,
    MetricTarget,
    PredictiveConfig,
    ScheduledConfig,
    metric_kind,
)

SCALING_COLUMNS = ["time_s", "pool", "policy", "replicas", "ready", "desired", "metric", "value", "target",
                   "proposal"]

#: What an HPA sees of a starting replica: no container yet (HPA-4 "pending"), or running without metrics.
_PHASE = {"node": "pending", "pull": "pending", "load": "running", "warmup": "running", "probe": "running",
          "ready": "ready"}


def _direction(cfg) -> Direction:
    return Direction(cfg.stabilization_window_s, tuple(RatePolicy(p.type, p.value, p.period_s) for p in cfg.policies),
                     cfg.select_policy)


def hpa_process(env, fleet, pool, cfg: HpaConfig, log: list):
    """The HPA control loop of one pool (HPA-1): every ``sync_period_s``."""
    scraper = Scraper(env, fleet, pool, cfg.metrics, cfg.scrape_interval_s, cfg.metric_delay_s)
    env.process(scraper.loop())
    hpa = Hpa(cfg.min_replicas, cfg.max_replicas, _direction(cfg.behavior.scale_up),
              _direction(cfg.behavior.scale_down))
    while True:
        yield env.timeout(cfg.sync_period_s)
        yield env.timeout(0)  # after everything else due now: a scrape at this instant is visible to this sync
        snap = scraper.visible()
        active = pool.active()
        current = len(active)
        ready = sum(m.state == "ready" for m in active)
        proposals, rows = [], []
        for m in cfg.metrics:
            kind = metric_kind(m.name)
            if kind == "pods":
                samples = [PodSample(_PHASE[a.state], snap.pods.get(a.replica.replica_id, {}).get(m.name)
                                     if snap is not None and a.state == "ready" else None) for a in active]
                seen = [s.value for s in samples if s.value is not None]
                value = float(np.mean(seen)) if seen else None
                proposal = pods_proposal(samples, current, m.target, cfg.tolerance)
            else:
                value = snap.series.get(m.name) if snap is not None else None
                proposal = external_proposal(value, current, ready, m.target, cfg.tolerance, average=kind == "rate")
            proposals.append(proposal)
            rows.append([env.now, pool.name, "hpa", current, ready, 0, m.name, value, m.target, proposal])
        _apply(fleet, pool, current, hpa.decide(env.now, current, proposals), rows, log)


def _apply(fleet, pool, current: int, desired: int, rows: list[list], log: list) -> None:
    """Act on an HPA-style decision (never zero while requests wait for the pool) and log it, row per metric."""
    desired = fleet.floor_for_pending(pool.name, desired)
    for row in rows:
        row[5] = desired
        log.append(tuple(row))
    if desired != current:
        pool.scale_to(desired)


def _total(fleet, pool, name: str) -> float:
    """A pod gauge summed over the ready replicas, with the requests waiting at the gateway that this pool could
    serve (what a KEDA trigger on the serving stack's queue sees)."""
    out = fleet.pending_for(pool.name)
    for m in pool.members:
        if m.state == "ready":
            st = m.replica.state
            out += len(st.waiting) + (len(st.running) if name == "concurrency" else 0)
    return float(out)


def keda_process(env, fleet, pool, cfg: KedaConfig, log: list):
    """KEDA (KEDA-1 to KEDA-3): a polling loop for 0 <-> 1 and the HPA it creates for 1 <-> N."""
    latency = [t for t in cfg.triggers if metric_kind(t.name) == "latency"]
    rates = [t for t in cfg.triggers if t.name == "request_rate"]
    scraper = Scraper(env, fleet, pool, [MetricTarget(name=t.name, target=t.target, window_s=t.window_s)
                                         for t in (*latency, *rates)], cfg.polling_interval_s, 0.0)
    hpa = Hpa(max(1, cfg.min_replicas), cfg.max_replicas, _direction(cfg.behavior.scale_up),
              _direction(cfg.behavior.scale_down))
    # Never active yet: KEDA (initialCooldownPeriod 0, Table 1.2) takes an idle pool to zero at its first poll, not a
    # cooldown after start.
    state: dict[str, float | None] = {"last_active": None}

    def values() -> dict[str, float | None]:
        series = scraper.take().series
        return {t.name: series[t.name] if t.name in series else _total(fleet, pool, t.name) for t in cfg.triggers}

    def poll():
        while True:
            yield env.timeout(cfg.polling_interval_s)
            yield env.timeout(0)
            current = len(pool.active())
            now_values = values()
            active = any(v is not None and v > t.activation for t, v in zip(cfg.triggers, now_values.values(),
                                                                           strict=True))
            if active:
                state["last_active"] = env.now
            desired = current
            if current < cfg.min_replicas:
                desired = cfg.min_replicas
            elif active and current == 0:
                desired = max(1, cfg.min_replicas)
            elif (not active and current > 0 and cfg.min_replicas == 0
                  and (state["last_active"] is None or env.now - state["last_active"] >= cfg.cooldown_s)):
                desired = 0
            for t in cfg.triggers:
                log.append((env.now, pool.name, "keda", current, pool.count("ready"), desired, t.name + ":active",
                            now_values[t.name], t.activation, desired))
            if desired != current:
                pool.scale_to(desired)

    env.process(poll())
    while True:
        yield env.timeout(cfg.sync_period_s)
        yield env.timeout(0)
        current = len(pool.active())
        if current == 0:
            continue  # KEDA's activation loop owns 0 <-> 1; the HPA stands aside at zero
        ready = pool.count("ready")
        now_values = values()
        proposals, rows = [], []
        for t in cfg.triggers:
            value = now_values[t.name]
            proposal = external_proposal(value, current, ready, t.target, cfg.tolerance,
                                         average=metric_kind(t.name) != "latency")
            proposals.append(proposal)
            rows.append([env.now, pool.name, "keda", current, ready, 0, t.name, value, t.target, proposal])
        _apply(fleet, pool, current, hpa.decide(env.now, current, proposals), rows, log)


def kpa_process(env, fleet, pool, cfg: KpaConfig, log: list):
    """Knative KPA (KPA-1 to KPA-5): a sample of the pool's total concurrency (or arrivals) every second, a decision
    every ``tick_s``. Requests waiting at the gateway count as concurrency (Knative's activator holds them)."""
    target = cfg.target * cfg.target_utilization
    kpa = Kpa(target, cfg.stable_window_s, cfg.stable_window_s * cfg.panic_window_percentage / 100,
              cfg.panic_threshold_percentage / 100, cfg.max_scale_up_rate, cfg.max_scale_down_rate,
              cfg.scale_down_delay_s, cfg.min_replicas, cfg.max_replicas, cfg.activation_scale,
              cfg.scale_to_zero_grace_s)
    next_tick = cfg.tick_s
    while True:
        yield env.timeout(1.0)
        yield env.timeout(0)
        if cfg.metric == "concurrency":
            value = _total(fleet, pool, "concurrency")
        else:
            value = float(fleet.arrivals_within(1.0, pool.name))
        kpa.observe(env.now, value)
        if env.now + 1e-9 < next_tick:
            continue
        next_tick += cfg.tick_s
        current, ready = len(pool.active()), pool.count("ready")
        desired = fleet.floor_for_pending(pool.name, kpa.decide(env.now, ready, current))
        log.append((env.now, pool.name, "kpa", current, ready, desired, cfg.metric + (":panic" if kpa.in_panic else
                                                                                      ":stable"),
                    value, target, desired))
        if desired != current:
            pool.scale_to(desired)


def scheduled_process(env, fleet, pool, cfg: ScheduledConfig, log: list):
    """A time-of-day table, repeated every ``period_s``."""
    cycle = 0
    while True:
        for entry in cfg.schedule:
            at = cycle * cfg.period_s + entry.at_s
            if at > env.now:
                yield env.timeout(at - env.now)
            current = len(pool.active())
            log.append((env.now, pool.name, "scheduled", current, pool.count("ready"), entry.replicas, "schedule",
                        None, None, entry.replicas))
            if entry.replicas != current:
                pool.scale_to(entry.replicas)
        cycle += 1


def predictive_process(env, fleet, pool, cfg: PredictiveConfig, log: list):
    """Forecast the rate a cold start ahead (sim/autoscale/predictive.py) every ``period_s``."""
    lead = cfg.lead_s if cfg.lead_s is not None else pool.typical_cold_start_s()
    recent: deque[tuple[float, int]] = deque()
    while True:
        yield env.timeout(cfg.period_s)
        yield env.timeout(0)
        rates = bucket_rates(fleet.recent_arrivals(pool.name), env.now, cfg.bucket_s, cfg.history_s)
        forecast = holt_forecast(rates, cfg.alpha, cfg.beta, lead / cfg.bucket_s + 0.5)
        want = replicas_for(forecast, cfg.capacity_rps, cfg.headroom)
        recent.append((env.now, want))
        while recent[0][0] <= env.now - cfg.scale_down_delay_s and len(recent) > 1:
            recent.popleft()
        desired = fleet.floor_for_pending(pool.name, min(max(max(w for _, w in recent), cfg.min_replicas),
                                                          cfg.max_replicas))
        current = len(pool.active())
        log.append((env.now, pool.name, "predictive", current, pool.count("ready"), desired, "forecast_rps",
                    forecast, cfg.capacity_rps, want))
        if desired != current:
            pool.scale_to(desired)


#: Buckets of ``window_s`` that a fleet autoscaler's forecast looks back over.
FORECAST_BUCKETS = 10


def fleet_process(env, fleet, cfg: FleetAutoscaleConfig, log: list):
    """One autoscaler across pools (sim/autoscale/fleet.py): demand in requests/s, shared out by strategy."""
    pools = [fleet.pools[n] for n in cfg.pools]
    lead = max(p.typical_cold_start_s() for p in pools)
    recent: dict[str, deque] = {n: deque() for n in cfg.pools}
    while True:
        yield env.timeout(cfg.period_s)
        yield env.timeout(0)
        if cfg.demand == "observed":
            demand = observed_rate(fleet.arrivals_within(cfg.window_s), cfg.window_s, env.now)
        else:
            rates = bucket_rates(fleet.recent_arrivals(), env.now, cfg.window_s, FORECAST_BUCKETS * cfg.window_s)
            demand = holt_forecast(rates, 0.5, 0.3, lead / cfg.window_s + 0.5)
        # Requests waiting at the gateway are demand too (they would otherwise wait for ever once arrivals stop).
        demand += len(fleet.pending) / cfg.window_s
        offers = []
        for pool in pools:
            plan = pool.plan
            offers.append(PoolOffer(
                pool.name, cfg.capacity_rps[pool.name], cfg.min_replicas.get(pool.name, 0),
                cfg.max_replicas.get(pool.name, 1000), plan.usd_per_gpu_hour * plan.config.tensor_parallel,
                spot=plan.config.spot is not None or plan.config.price.tier == "spot",
                stuck=sum(m.state == "node" and m.node.failed_attempts > 0 for m in pool.members),
                current=len(pool.active())))
        want = allocate(demand * (1 + cfg.headroom), offers, cfg.strategy)
        for pool in pools:
            history = recent[pool.name]
            history.append((env.now, want[pool.name]))
            while len(history) > 1 and history[0][0] <= env.now - cfg.scale_down_delay_s:
                history.popleft()
            desired = max(w for _, w in history)
            current = len(pool.active())
            log.append((env.now, pool.name, f"fleet:{cfg.strategy}", current, pool.count("ready"), desired,
                        "demand_rps", demand, cfg.capacity_rps[pool.name], want[pool.name]))
            if desired != current:
                pool.scale_to(desired)


def rate_window_s(cfg) -> float:
    """How far back an autoscaler (a pool's, or ``fleet_autoscale``) reads the fleet's arrivals."""
    if isinstance(cfg, FleetAutoscaleConfig):
        return cfg.window_s * (FORECAST_BUCKETS if cfg.demand == "forecast" else 1)
    if cfg.policy == "hpa":
        return max((m.window_s for m in cfg.metrics if m.name == "request_rate"), default=0.0)
    if cfg.policy == "keda":
        return max((t.window_s for t in cfg.triggers if t.name == "request_rate"), default=0.0)
    if cfg.policy == "predictive":
        return cfg.history_s
    return 1.0 if cfg.policy == "kpa" and cfg.metric == "rps" else 0.0


#: Autoscaling policies by ``autoscale.policy``: each a process function ``(env, fleet, pool, cfg, log)``.
AUTOSCALERS = {"hpa": hpa_process, "keda": keda_process, "kpa": kpa_process, "scheduled": scheduled_process,
               "predictive": predictive_process}

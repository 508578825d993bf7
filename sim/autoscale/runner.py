"""Autoscalers in time: each one a SimPy process that wakes on its period, reads the newest visible metrics and
asks its policy (a pure decision, e.g. :class:`~sim.autoscale.hpa.Hpa`) for the pool's replica count.

Every decision is logged as rows of :data:`SCALING_COLUMNS`, one per metric: the metric's value and proposal,
the replicas counted, and the decision.
"""

from __future__ import annotations

import numpy as np

from sim.autoscale.hpa import Direction, Hpa, PodSample, RatePolicy, external_proposal, pods_proposal
from sim.autoscale.metrics import Scraper
from sim.scaling_config import HpaConfig, metric_kind

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
        desired = hpa.decide(env.now, current, proposals)
        for row in rows:
            row[5] = desired
            log.append(tuple(row))
        if desired != current:
            pool.scale_to(desired)


#: Autoscaling policies by ``autoscale.policy``: each a process function ``(env, fleet, pool, cfg, log)``.
AUTOSCALERS = {"hpa": hpa_process}

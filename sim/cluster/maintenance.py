"""Host maintenance: windows (one host at a time, or rolling across a pool's hosts) and what each does to the
replicas on the host: down and back for whole GPUs (bare metal or passthrough), a live migration's stun for vGPU and
MIG VMs (see :class:`sim.config.MaintenanceConfig`). SimPy processes own the timing; the pool and replica do the
state changes; every window is logged (``Results.maintenance``)."""

from __future__ import annotations

import simpy

from sim.config import MaintenanceConfig
from sim.errors import ScenarioError

#: Sharing modes whose VMs live-migrate (vGPU and MIG-backed vGPU under a hypervisor).
MIGRATES = ("vgpu", "mig")
MAINTENANCE_COLUMNS = ["pool", "host", "kind", "start_s", "end_s", "replicas", "requests_requeued",
                       "requests_delayed", "stun_s", "capacity_lost_replica_s"]


def hosts_of(fleet, pool: str) -> list:
    """A pool's hosts at the start of the run: its nodes, or for a shared pool the physical GPUs holding its
    replicas."""
    plan = fleet.plans[pool]
    if plan.shared:
        return fleet.deployment.gpus_of(pool)
    return [n for n in fleet.pools[pool].nodes if n.end_s is None]


def initial_hosts(plan, deployment) -> int:
    """How many hosts a pool has at the start: its nodes (its replicas packed ``nodes.gpus_per_node`` GPUs to a node,
    as :class:`sim.cluster.pool.PoolRuntime` starts them), or for a shared pool the physical GPUs holding its
    replicas."""
    if plan.shared:
        return len(deployment.gpus_of(plan.name))
    cfg = plan.config
    per_node = max(1, (cfg.nodes.gpus_per_node or cfg.gpus_per_replica) // cfg.gpus_per_replica)
    return -(-cfg.replicas // per_node)


def check_windows(scenario, deployment, source: str) -> None:
    """At load: every listed window's host exists at the start (:class:`ScenarioError` naming the window)."""
    for i, w in enumerate(scenario.maintenance.windows):
        n = initial_hosts(deployment.pools[w.pool], deployment)
        if w.host >= n:
            raise ScenarioError(source, f"maintenance.windows.{i}.host",
                                f"pool {w.pool} has {n} host{'s' if n != 1 else ''} at the start"
                                + (f" (0-{n - 1})" if n else "") + f", so there is no host {w.host}")


def windows(cfg: MaintenanceConfig, fleet, source: str) -> list[tuple[str, int, float, float]]:
    """Every window as ``(pool, host, start_s, duration_s)``: the listed ones, then the rolling schedule (each pool's
    hosts in order, one at a time); a host index beyond the pool's hosts is a :class:`ScenarioError`."""
    out = []
    for i, w in enumerate(cfg.windows):
        n = len(hosts_of(fleet, w.pool))
        if w.host >= n:
            raise ScenarioError(source, f"maintenance.windows.{i}.host",
                                f"pool {w.pool} has {n} host{'s' if n != 1 else ''} at the start"
                                + (f" (0-{n - 1})" if n else ""))
        out.append((w.pool, w.host, w.start_s, w.duration_s))
    roll = cfg.rolling
    if roll is not None:
        t = roll.start_s
        for pool in roll.pools:
            for host in range(len(hosts_of(fleet, pool))):
                out.append((pool, host, t, roll.duration_s))
                t += roll.duration_s + roll.gap_s
    return out


def start_maintenance(env: simpy.Environment, fleet, cfg: MaintenanceConfig, source: str) -> list[dict]:
    """Schedule every window; return the log its processes fill (one row per window and host)."""
    log: list[dict] = []
    for pool, host, start_s, duration_s in windows(cfg, fleet, source):
        target = hosts_of(fleet, pool)[host]
        env.process(_window(env, fleet, cfg, pool, host, target, start_s, duration_s, log))
    return log


def _window(env, fleet, cfg: MaintenanceConfig, pool: str, host: int, target, start_s: float, duration_s: float,
            log: list[dict]):
    yield env.timeout(start_s)
    plan = fleet.plans[pool]
    mode = plan.config.sharing.mode if plan.config.sharing is not None else None
    row = {"pool": pool, "host": host, "start_s": env.now, "requests_requeued": 0, "requests_delayed": 0,
           "stun_s": 0.0}
    if plan.shared and mode in MIGRATES:
        # Every VM on the physical GPU moves to a spare host with the same driver: one stun each.
        placement = fleet.deployment.placement()
        on_gpu = [(name, i) for (name, i), (gpu, _) in placement.items() if gpu.gpu_id == target.gpu_id]
        row.update(kind="migrated", replicas=0, end_s=env.now, capacity_lost_replica_s=0.0)
        log.append(row)

        def taken(stun_s: float, requests: int) -> None:  # the stun as it happened, at the VM's step boundary
            row["stun_s"] += stun_s
            row["capacity_lost_replica_s"] += stun_s
            row["requests_delayed"] += requests
            row["end_s"] = max(row["end_s"], env.now + stun_s)

        for name, i in on_gpu:
            members = fleet.pools[name].members
            if i >= len(members) or members[i].replica.stopped:
                continue
            sizing = fleet.plans[name].sizing

            def size(replica, sizing=sizing) -> float:
                # The frame buffer in use: the weights and the KV blocks in use at the stun.
                state_bytes = sizing.weight_bytes_per_gpu + replica.state.used_blocks * sizing.block_size * (
                    sizing.kv_bytes_per_token_per_gpu)
                return cfg.switchover_s + state_bytes / (cfg.migration_gb_s * 1e9)

            members[i].replica.pause(size, taken)
            row["replicas"] += 1
        return
    # Whole GPUs (or time-slicing / MPS, which have no live migration): down for the window, then a restart.
    node = target if not plan.shared else None
    if node is None:
        row.update(kind="not_supported", replicas=0, end_s=env.now, capacity_lost_replica_s=0.0)
        log.append(row)
        return
    stopped, requeued = fleet.pools[pool].take_down(node)
    # Logged now, with the planned end (back ready after the restart), so a run that ends first still shows it.
    row.update(kind="down", replicas=stopped, requests_requeued=requeued, end_s=env.now + duration_s + cfg.restart_s,
               capacity_lost_replica_s=stopped * (duration_s + cfg.restart_s))
    log.append(row)
    yield env.timeout(duration_s)
    fleet.pools[pool].bring_up(node, stopped, cfg.restart_s)

"""A pool's replicas through their lives, on the nodes that hold their GPUs.

A replica that is asked for goes through the start-up phases of reference CS-1 (``sim/scaling_config.py``):

    node (only if no node of the pool has free GPUs) -> pull (only on a node without the image) -> load (weights)
    -> warmup (compile, CUDA graphs) -> probe (readiness) -> ready -> draining -> released

Only ready replicas receive requests. A replica asked to go while starting is released at once; a ready one
drains (no new requests) until empty or until ``drain_timeout_s``, when what is left is re-queued or failed.
Nodes hold ``gpus_per_node`` GPUs; they are billed from the start of provisioning to their release, which comes
``release_after_idle_s`` after their last replica left. Each change is logged as ``(time_s, state)`` per replica
and per node: the exact event trace that outputs and tests read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import simpy

from sim.engine.replica import Replica
from sim.engine.request import Request
from sim.engine.sizing import weight_bytes
from sim.scaling_config import Duration

STARTING = ("node", "pull", "load", "warmup", "probe")
#: Where a replica's life ends: scaled in, or lost with its node (spot reclaim, failure).
TERMINAL = ("released", "reclaimed", "failed")


def typical_s(dist: Duration) -> float:
    """A phase's typical duration: its median (the midpoint for uniform)."""
    if dist.dist == "fixed":
        return dist.s
    if dist.dist == "uniform":
        return (dist.low_s + dist.high_s) / 2
    if dist.dist == "lognormal":
        return dist.median_s
    return dist.mean_s * math.log(2)


def sample_s(dist: Duration, rng: np.random.Generator) -> float:
    """One draw of a phase duration (seconds)."""
    if dist.dist == "fixed":
        return dist.s
    if dist.dist == "uniform":
        return float(rng.uniform(dist.low_s, dist.high_s))
    if dist.dist == "lognormal":
        return float(dist.median_s * math.exp(dist.sigma * rng.standard_normal()))
    return float(rng.exponential(dist.mean_s))


@dataclass
class Node:
    """One machine of a pool; ``ready`` is pending while it is being provisioned. Billing runs from ``start_s``
    (the start of the provisioning attempt that succeeded) to ``end_s``."""

    node_id: int
    gpus: int
    start_s: float
    free: int
    ready: simpy.Event
    requested_s: float = 0.0
    failed_attempts: int = 0  # provisioning attempts that found no capacity
    image_cached: bool = False
    end_s: float | None = None
    ended_by: str = ""  # "", "released", "reclaimed", "failed"
    doomed: bool = False  # reclaim notice given or failing: no new replica is placed on it
    idle_since: float | None = None
    maintenance: int = 0  # maintenance windows open on it: no new replica is placed on it meanwhile


@dataclass
class Member:
    """One replica's life in its pool: its node and its state log."""

    replica: Replica
    node: Node
    log: list[tuple[float, str]] = field(default_factory=list)
    process: simpy.Process | None = None
    lost_as: str = ""  # set when its node is reclaimed or fails: the terminal state to log

    @property
    def state(self) -> str:
        return self.log[-1][1]


@dataclass
class PoolHooks:
    """What a pool tells the fleet: a replica became ready, stopped taking requests, or gave requests back."""

    ready: Callable[[Replica], None]
    unroute: Callable[[Replica], None]
    give_back: Callable[[list[Request], str], None]


class PoolRuntime:
    """The replicas and nodes of one pool, and the lifecycle processes that move them."""

    def __init__(self, env: simpy.Environment, plan, make_replica: Callable[[int], Replica], hooks: PoolHooks,
                 streams) -> None:
        self.env = env
        self.name = plan.name
        self.plan = plan
        self.cfg = plan.config.lifecycle
        self.gpus_per_node = plan.config.nodes.gpus_per_node or plan.config.gpus_per_replica
        self.release_after_idle_s = plan.config.nodes.release_after_idle_s
        self.tp = plan.config.gpus_per_replica  # GPUs a replica takes on its node
        self.make_replica = make_replica
        self.hooks = hooks
        self.rng = streams.get(f"lifecycle.{plan.name}")
        self.nodes_cfg = plan.config.nodes
        self.spot = getattr(plan.config, "spot", None)
        self.failures = getattr(plan.config, "failures", None)
        # Separate streams, so that turning spot or failures on leaves every other draw as it was.
        self.rng_nodes = streams.get(f"nodes.{plan.name}")
        self.rng_spot = streams.get(f"spot.{plan.name}")
        self.rng_fail = streams.get(f"failures.{plan.name}")
        self.members: list[Member] = []
        self.nodes: list[Node] = []
        self.desired = 0
        self.load_s = weight_bytes(plan.model, plan.config.precision) / 1e9 / self.cfg.weight_load_gb_s

    def typical_cold_start_s(self) -> float:
        """A new replica's typical start-up time on a new node (each phase at its typical duration)."""
        cfg = self.cfg
        return (typical_s(cfg.node_provision_s) + cfg.image_gb / cfg.image_pull_gb_s + self.load_s
                + typical_s(cfg.warmup_s) + typical_s(cfg.readiness_s))

    # ---------------------------------------------------------------------------------------------- queries
    def active(self) -> list[Member]:
        """Replicas that count (starting or ready; not draining or released), in creation order."""
        return [m for m in self.members if m.state in STARTING or m.state == "ready"]

    def count(self, *states: str) -> int:
        return sum(m.state in states for m in self.members)

    # ---------------------------------------------------------------------------------------------- actions
    def start_ready(self, n: int) -> None:
        """``n`` replicas ready at time 0 (the fleet as it stands when the run begins)."""
        for _ in range(n):
            node = self._node_with_room(provision=False)
            member = self._add(node, "ready")
            self.hooks.ready(member.replica)
        self.desired = n

    def scale_to(self, n: int) -> None:
        """Add or remove replicas so that ``n`` are starting or ready."""
        self.desired = n
        active = self.active()
        if n > len(active):
            for _ in range(n - len(active)):
                node = self._node_with_room(provision=True)
                first = "node" if not node.ready.triggered else "load" if node.image_cached else "pull"
                member = self._add(node, first)
                member.process = self.env.process(self._start_up(member))
        elif n < len(active):
            # As a ReplicaSet picks pods to delete: not-yet-ready before ready, and the newest first.
            ranked = sorted(active, key=lambda m: (m.state == "ready", -m.replica.replica_id))
            for member in ranked[:len(active) - n]:
                self._retire(member)

    def take_down(self, node: Node) -> tuple[int, int]:
        """Maintenance of ``node`` (replicas that cannot migrate): its replicas stop now and their requests are given
        back to be routed again; nothing is placed on it until :meth:`bring_up`. Returns (replicas stopped, requests
        re-queued). The node stays (and is billed): it is the operator's."""
        stopped = requeued = 0
        node.maintenance += 1  # nothing is placed on it until its windows end (doomed is the hazards' flag)
        for m in [m for m in self.members if m.node is node and m.state not in TERMINAL]:
            if m.state in STARTING:
                self._lose(m)
            else:
                if m.state == "ready":
                    self.hooks.unroute(m.replica)
                lost = m.replica.stop()
                requeued += len(lost)
                self.hooks.give_back(lost, "")
                self._release(m)
            stopped += 1
        if stopped:
            node.idle_since = None  # emptied by the window, not idle: not released while its replicas come back
        return stopped, requeued

    def bring_up(self, node: Node, replicas: int, restart_s: float) -> list[Member]:
        """The end of one of ``node``'s maintenance windows: up to ``replicas`` start on it again, ready after
        ``restart_s``; no more than the pool is short of its desired count (an autoscaler or a failure's
        replacement may have started others meanwhile), and none on a node that ended meanwhile."""
        node.maintenance -= 1
        out = []
        if node.maintenance or node.end_s is not None:
            return out
        short = self.desired - len(self.active())
        for _ in range(max(0, min(replicas, short, node.free // self.tp))):
            member = self._add(node, "load")
            member.process = self.env.process(self._restart(member, restart_s))
            out.append(member)
        if not out and node.free == node.gpus and node.idle_since is None:
            node.idle_since = self.env.now  # back empty: released as any idle node is
            self.env.process(self._release_node(node, self.env.now))
        return out

    def under_maintenance(self) -> bool:
        """Whether a node of the pool is in a maintenance window (its replicas come back)."""
        return any(n.maintenance and n.end_s is None for n in self.nodes)

    def _restart(self, member: Member, restart_s: float):
        try:
            yield self.env.timeout(restart_s)
        except simpy.Interrupt:
            self._release(member)
            return
        self._ready(member)

    def _ready(self, member: Member) -> None:
        self._set(member, "ready")
        member.process = None
        self.hooks.ready(member.replica)

    # ---------------------------------------------------------------------------------------------- internals
    def _set(self, member: Member, state: str) -> None:
        if member.state != state and member.state not in TERMINAL:
            member.log.append((self.env.now, state))

    def _add(self, node: Node, state: str) -> Member:
        node.free -= self.tp
        node.idle_since = None
        member = Member(self.make_replica(len(self.members)), node, [(self.env.now, state)])
        self.members.append(member)
        return member

    def _node_with_room(self, provision: bool) -> Node:
        for node in self.nodes:  # the oldest node with room: ready ones first
            if (node.end_s is None and not node.doomed and not node.maintenance and node.free >= self.tp
                    and node.ready.triggered):
                return node
        for node in self.nodes:
            if node.end_s is None and not node.doomed and not node.maintenance and node.free >= self.tp:
                return node
        now = self.env.now
        # A node to provision is billed from the start of the attempt that finds capacity (set then).
        node = Node(len(self.nodes), self.gpus_per_node, math.inf if provision else now, self.gpus_per_node,
                    self.env.event(), requested_s=now)
        self.nodes.append(node)
        if provision:
            self.env.process(self._provision(node))
        else:
            node.ready.succeed()
            node.image_cached = True
            self._watch(node)
        return node

    def _provision(self, node: Node):
        cfg = self.nodes_cfg
        while cfg.stockout_probability and self.rng_nodes.random() < cfg.stockout_probability:
            # No capacity: the attempt is given up at the provisioning timeout, then retried after a backoff.
            yield self.env.timeout(cfg.provision_timeout_s + cfg.retry_backoff_s)
            node.failed_attempts += 1
            if node.end_s is not None:
                return  # nobody waits for it any more
        node.start_s = self.env.now
        yield self.env.timeout(sample_s(self.cfg.node_provision_s, self.rng))
        if node.end_s is None:
            node.ready.succeed()
            self._watch(node)

    def _watch(self, node: Node) -> None:
        """Start the node's spot-reclaim and failure clocks (exponential, per GPU)."""
        if self.spot is not None:
            rate = self.spot.reclaims_per_gpu_hour * node.gpus / 3600
            self.env.process(self._hazard(node, self.rng_spot.exponential(1 / rate), "reclaimed"))
        if self.failures is not None:
            rate = node.gpus / (self.failures.mtbf_gpu_hours * 3600)
            self.env.process(self._hazard(node, self.rng_fail.exponential(1 / rate), "failed"))

    def _hazard(self, node: Node, after_s: float, how: str):
        yield self.env.timeout(after_s)
        if node.end_s is not None or node.doomed:
            return  # released (or lost) before its time came
        node.doomed = True  # nothing new is placed on it from now on
        reason = {"reclaimed": ("spot_reclaimed" if self.spot and self.spot.on_reclaim == "fail" else ""),
                  "failed": ("gpu_failure" if self.failures and self.failures.on_failure == "fail" else "")}[how]
        if how == "reclaimed":
            # The notice: replicas still starting there will never serve, ready ones stop taking requests, and
            # the replacements start now (on other nodes).
            for m in [m for m in self.members if m.node is node and m.state not in TERMINAL]:
                if m.state in STARTING:
                    self._lose(m, how)
                elif m.state == "ready":
                    self._set(m, "draining")
                    self.hooks.unroute(m.replica)
            self.scale_to(self.desired)
            yield self.env.timeout(self.spot.notice_s)
            if node.end_s is not None:
                return
        node.end_s, node.ended_by = self.env.now, how
        for m in [m for m in self.members if m.node is node and m.state not in TERMINAL]:
            if m.state in STARTING:
                self._lose(m, how)
                continue
            if m.state == "ready":
                self.hooks.unroute(m.replica)
            m.lost_as = how
            self.hooks.give_back(m.replica.stop(), reason)
            self._release(m)
        self.scale_to(self.desired)  # the ReplicaSet replaces what was lost

    def _start_up(self, member: Member):
        env, cfg, node = self.env, self.cfg, member.node
        try:
            if not node.ready.triggered:
                yield node.ready
            if not node.image_cached:
                self._set(member, "pull")
                yield env.timeout(cfg.image_gb / cfg.image_pull_gb_s)
                node.image_cached = True
            self._set(member, "load")
            yield env.timeout(self.load_s)
            self._set(member, "warmup")
            yield env.timeout(sample_s(cfg.warmup_s, self.rng))
            self._set(member, "probe")
            yield env.timeout(sample_s(cfg.readiness_s, self.rng))
        except simpy.Interrupt:
            self._release(member)
            return
        self._ready(member)

    def _lose(self, member: Member, how: str = "") -> None:
        """End a replica that is still starting, now (its start-up process is told to stop)."""
        member.lost_as = how
        self._release(member)  # at once, so that a count taken at this instant no longer includes it
        if member.process is not None and member.process.is_alive:
            member.process.interrupt()

    def _retire(self, member: Member) -> None:
        if member.state in STARTING:
            self._lose(member)
            return
        self._set(member, "draining")
        self.hooks.unroute(member.replica)
        member.process = self.env.process(self._drain(member))

    def _drain(self, member: Member):
        replica = member.replica
        if replica.has_work:
            idle = replica.when_idle()
            yield idle | self.env.timeout(self.cfg.drain_timeout_s)
            if member.state in TERMINAL:
                return  # lost with its node meanwhile
            if not idle.triggered:
                reason = "drain_timeout" if self.cfg.on_drain_timeout == "fail" else ""
                self.hooks.give_back(replica.stop(), reason)
        self._release(member)

    def _release(self, member: Member) -> None:
        if member.state in TERMINAL:
            return
        if not member.replica.stopped:
            member.replica.stop(evict=False)
        self._set(member, member.lost_as or "released")
        node = member.node
        node.free += self.tp
        if node.free == node.gpus and node.end_s is None:
            node.idle_since = self.env.now
            self.env.process(self._release_node(node, self.env.now))

    def _release_node(self, node: Node, idle_since: float):
        # Even with no delay, the release waits for this instant's other events: a replica started at the same
        # instant moves into the node instead of provisioning another.
        yield self.env.timeout(self.release_after_idle_s)
        if node.idle_since == idle_since and node.end_s is None:  # nobody moved in meanwhile
            node.end_s, node.ended_by = self.env.now, "released"

"""Wire one run: a fresh SimPy environment, the pools' replicas, the router and the workload."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import simpy

from sim.autoscale.runner import AUTOSCALERS, fleet_process, rate_window_s
from sim.cluster.deploy import Deployment, PoolPlan
from sim.cluster.maintenance import start_maintenance
from sim.cluster.pool import PoolHooks, PoolRuntime
from sim.cluster.router import ROUTERS, PoolRules
from sim.config import ClosedLoopWorkload, KernelPerf, Scenario, TraceWorkload
from sim.engine.replica import Replica
from sim.engine.request import Request
from sim.engine.scheduler import SCHEDULERS, EngineLimits
from sim.engine.sizing import kv_bytes_per_token
from sim.errors import ScenarioError, unknown_name
from sim.metrics.records import SUMMARY_COLUMNS, requests_frame
from sim.metrics.store import RowStore
from sim.metrics.timeseries import PoolMonitor
from sim.perf import build_perf_model
from sim.rng import PrefixedStreams, Streams
from sim.scaling_config import metric_kind
from sim.sharing.slicing import build_share
from sim.workload.source import ArrivalTimeout, ClosedLoop, replay, workload_arrays


class ReplicaViews(Sequence):
    """Read-only snapshots of replicas, taken when a router looks at one (a router that samples two replicas
    of a hundred should not pay for a hundred snapshots)."""

    __slots__ = ("_replicas",)

    def __init__(self, replicas: list[Replica]) -> None:
        self._replicas = replicas

    def __len__(self) -> int:
        return len(self._replicas)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [r.view() for r in self._replicas[i]]
        return self._replicas[i].view()

    def cached_prefix(self, i: int, ids) -> int:
        """How many leading prefix ids of a request replica ``i`` has cached (0 without prefix caching)."""
        cache = self._replicas[i].prefix_cache
        return cache.match(ids) if cache is not None and ids else 0


@dataclass(frozen=True, slots=True)
class PrefillDone:
    """A prefill pool's part of a request (disaggregated serving), as its latency autoscaler reads it: done at the
    first token."""

    arrival_s: float
    scheduled_s: float
    first_token_s: float
    output_tokens: int = 1

    @property
    def finish_s(self) -> float:
        return self.first_token_s


#: Completed requests are turned into records this many at a time (then the Request objects are dropped).
RECORD_CHUNK = 50_000


@dataclass
class Fleet:
    """The replicas of every pool, behind one router; every request that arrives ends up in ``records``.

    A request is held as a live object only while in flight: finished and rejected ones are buffered and turned
    into record rows a chunk at a time (:data:`RECORD_CHUNK`) into ``records``, which spills to Parquet parts
    past ``run.spill_after_requests`` rows. :meth:`in_flight` lists the rest at the end.
    """

    env: simpy.Environment
    deployment: Deployment
    router: object
    monitor: PoolMonitor
    events: list | None
    records: RowStore
    replicas: list[Replica] = field(default_factory=list)  # every replica that ever existed, by replica id
    pools: dict[str, PoolRuntime] = field(default_factory=dict)
    routable: list[Replica] = field(default_factory=list)  # ready replicas: the router's choices
    pending: deque[Request] = field(default_factory=deque)  # at the gateway, waiting for a ready replica
    shares: dict[str, object] = field(default_factory=dict)  # physical GPU id -> its time-sharing runtime
    completed: list[Request] = field(default_factory=list)
    arrived: int = 0
    arrivals_over: bool = False
    unfinished: int = 0
    shortest_len: int = 0  # the smallest max_model_len of a ready replica: every one takes a request this long
    longest_len: int = 0  # the largest max_model_len of any pool: longer requests are rejected
    can_scale: bool = False  # some pool has an autoscaler (a request may wait for a replica to start)
    scalable: set[str] = field(default_factory=set)  # pools whose replica count can change during the run
    arrival_times: list[deque[float]] = field(default_factory=lambda: [deque()])  # per class, recent arrivals
    rate_window_s: float = 0.0  # the longest window over which an autoscaler reads the arrival rate
    scaling: list[tuple] = field(default_factory=list)  # autoscaler decisions (sim/autoscale/runner.py)
    finished_by_pool: dict[str, deque] = field(default_factory=dict)  # recent completions, for latency metrics
    latency_pools: set[str] = field(default_factory=set)  # pools whose autoscaler reads latency percentiles
    class_names: list[str] = field(default_factory=lambda: ["default"])
    class_models: list[str | None] = field(default_factory=lambda: [None])  # the model each class needs
    class_priorities: list[int] = field(default_factory=lambda: [0])
    routable_by_model: dict[str, list[Replica]] = field(default_factory=dict)
    longest_by_model: dict[str, int] = field(default_factory=dict)
    sources: int = 1  # arrival sources (one per class) still sending
    stalled: dict | None = None  # set when the run was ended because nothing could progress
    last_progress_s: float = 0.0  # when a request last finished or a replica last became ready
    prefixes: list = field(default_factory=lambda: [None])  # per class: (prompt, trace ids) -> (ids, tokens per id)
    kv_transfer: object = None  # disaggregated serving: the scenario's kv_transfer block (None: not disaggregated)
    pool_rules: PoolRules | None = None  # the router's rules and overflow (hybrid fleets), if any
    maintenance_log: list[dict] | None = None  # one row per maintenance window (sim/cluster/maintenance.py)
    pending_log: list[tuple[float, int]] = field(default_factory=list)  # (time, requests at the gateway) changes
    transferring: list[Request] = field(default_factory=list)  # KV caches on their way to a decode replica
    link_free_s: dict[int, float] = field(default_factory=dict)  # per prefill replica: when its link is next free
    done: simpy.Event | None = None
    workload: list = field(default_factory=list)  # per class: its arrivals and lengths (None for closed loop)
    replays: list = field(default_factory=list)  # the open-loop classes' arrival processes (generators)
    # Requests given back by a replica that went away, counted here (the gateway's own count, beside each request's
    # ``interruptions``; the invariants check that the two agree): routed again, or rejected with the pool's reason.
    given_back: dict[str, int] = field(default_factory=lambda: {"restarted": 0, "rejected": 0})

    @property
    def plans(self) -> dict[str, PoolPlan]:
        return self.deployment.pools

    @property
    def gpu_of_pool(self) -> dict[str, str]:
        return {name: plan.gpu.key for name, plan in self.plans.items()}

    def _complete(self, req: Request) -> None:
        if req.handoff_output:  # rejected before its hand-off: the record shows its real output length
            req.output_tokens, req.handoff_output = req.handoff_output, 0
        self.completed.append(req)
        if len(self.completed) >= RECORD_CHUNK:
            self.flush_records()

    def flush_records(self, extra: list[Request] | None = None) -> None:
        """Turn the buffered completed requests (and ``extra``) into record rows."""
        batch = self.completed + (extra or [])
        if batch:
            self.records.add(requests_frame(batch, self.gpu_of_pool, self.class_names))
        self.completed = []

    def in_flight(self) -> list[Request]:
        """Requests still queued or running on a replica, or waiting at the gateway (brought up to date)."""
        for replica in self.replicas:
            replica.settle()
        out = [*(req for r in self.replicas for req in (*r.state.running, *r.state.waiting)), *self.pending,
               *self.transferring]
        for req in out:
            if req.handoff_output:  # still on its prefill replica: its record shows its real output length
                req.output_tokens, req.handoff_output = req.handoff_output, 0
        return out

    def add_replicas(self, streams: Streams) -> None:
        for gpu in self.deployment.gpus:
            runtime = build_share(self.env, gpu, lambda pool: self.plans[pool].config.sharing)
            if runtime is not None:
                self.shares[gpu.gpu_id] = runtime
        placement = self.deployment.placement()
        hooks = PoolHooks(self._ready, self._unroute, self._lost)
        for name, plan in self.plans.items():
            eng = plan.config.engine
            limits = EngineLimits(eng.max_num_seqs, plan.sizing.max_num_batched_tokens, eng.block_size,
                                  eng.enable_chunked_prefill, plan.sizing.kv_blocks, eng.batch_delay_s)
            perf = build_perf_model(plan.config, plan.gpu, plan.model, plan.sizing)
            speculative = None
            if eng.speculative is not None:
                draft = None if plan.draft_model is None else build_perf_model(
                    plan.config.model_copy(update={"perf": KernelPerf()}), plan.gpu, plan.draft_model, plan.sizing)
                speculative = (eng.speculative, draft, streams.get(f"speculative.{name}"))

            def make(i: int, name=name, plan=plan, eng=eng, limits=limits, perf=perf, spec=speculative) -> Replica:
                gpu, position = placement.get((name, i), (None, 0))
                share = (self.shares[gpu.gpu_id], position) if gpu is not None and gpu.gpu_id in self.shares else None
                replica = Replica(
                    self.env, len(self.replicas), name, SCHEDULERS[eng.scheduler](limits), perf,
                    plan.sizing.kv_blocks, plan.sizing.block_size, plan.sizing.max_model_len,
                    self._finished, self.monitor, self.events, fast=eng.stepping == "fast", share=share,
                    prefix_caching=eng.enable_prefix_caching, by_priority=eng.scheduling_policy == "priority",
                    speculative=spec,
                )
                self.replicas.append(replica)
                return replica

            pool = self.pools[name] = PoolRuntime(self.env, plan, make, hooks, streams)
            pool.start_ready(plan.config.replicas)
            self.longest_len = max(self.longest_len, plan.sizing.max_model_len)
            model = plan.config.model
            self.longest_by_model[model] = max(self.longest_by_model.get(model, 0), plan.sizing.max_model_len)
            self.finished_by_pool[name] = deque()
        for name, plan in self.plans.items():
            scale = plan.config.autoscale
            if plan.config.spot is not None or plan.config.failures is not None:
                self.can_scale = True  # replicas come and go: a request may wait for a replacement
            if scale is not None:
                self.can_scale = True
                self.scalable.add(name)
                self.rate_window_s = max(self.rate_window_s, rate_window_s(scale))
                metrics = getattr(scale, "metrics", None) or getattr(scale, "triggers", None) or ()
                if any(metric_kind(m.name) == "latency" for m in metrics):
                    self.latency_pools.add(name)
                self.env.process(AUTOSCALERS[scale.policy](self.env, self, self.pools[name], scale, self.scaling))

    def add_fleet_autoscaler(self, cfg) -> None:
        """One autoscaler across pools (``fleet_autoscale``)."""
        self.can_scale = True
        self.scalable.update(cfg.pools)
        self.rate_window_s = max(self.rate_window_s, rate_window_s(cfg))
        self.env.process(fleet_process(self.env, self, cfg, self.scaling))

    def _serves(self, pool: str | None, cls: int) -> bool:
        """Whether requests of class ``cls`` may go to ``pool`` (None: any pool, i.e. the whole fleet)."""
        model = self.class_models[cls]
        return pool is None or model is None or self.plans[pool].config.model == model

    def recent_arrivals(self, pool: str | None = None) -> list[float]:
        """Sorted arrival times within the longest window any autoscaler reads, of the classes ``pool`` serves
        (None: all)."""
        horizon = self.env.now - self.rate_window_s
        out: list[float] = []
        for cls, arrivals in enumerate(self.arrival_times):
            while arrivals and arrivals[0] <= horizon:
                arrivals.popleft()
            if self._serves(pool, cls):
                out.extend(arrivals)
        return sorted(out) if len(self.arrival_times) > 1 else out

    def arrivals_within(self, window_s: float, pool: str | None = None) -> int:
        """Arrivals in ``(now - window_s, now]`` of the classes ``pool`` serves (None: all)."""
        threshold, n = self.env.now - window_s, 0
        for cls, arrivals in enumerate(self.arrival_times):
            if not self._serves(pool, cls):
                continue
            for t in reversed(arrivals):
                if t <= threshold:
                    break
                n += 1
        return n

    def pending_for(self, pool: str) -> float:
        """Requests waiting at the gateway that ``pool`` could serve, each shared equally among the pools that
        could (so that two autoscaled pools do not both count the same request)."""
        share = 0.0
        for req in self.pending:
            if self._serves(pool, req.cls):
                share += 1.0 / sum(self._serves(p, req.cls) for p in self.plans)
        return share

    def floor_for_pending(self, pool: str, desired: int) -> int:
        """A pool is not scaled to zero while requests that it could serve wait at the gateway (a gateway or
        activator in front of a scaled-to-zero service holds them and counts as demand)."""
        return 1 if desired == 0 and self.pending and self.pending_for(pool) > 0 else desired

    def can_serve(self, cls: int, role: str | None = None) -> bool:
        """Whether some pool that serves class ``cls`` (in a disaggregated fleet: of ``role``) can ever have a
        replica (now, or by scaling)."""
        return any(self._serves(name, cls) and (role is None or self.plans[name].config.role == role)
                   and (pool.active() or name in self.scalable or pool.under_maintenance())
                   for name, pool in self.pools.items())

    def _stage_limits(self, model: str | None) -> tuple[int, int]:
        """Disaggregated serving: the longest prompt + 1 a prefill pool of ``model`` takes and the longest request a
        decode pool takes (``None``: any model)."""
        lengths = {"prefill": 0, "decode": 0}
        for plan in self.plans.values():
            if model is None or plan.config.model == model:
                role = plan.config.role
                lengths[role] = max(lengths[role], plan.sizing.max_model_len)
        return lengths["prefill"], lengths["decode"]

    def _ready(self, replica: Replica) -> None:
        """A replica became ready: it takes requests, first those waiting at the gateway."""
        self.last_progress_s = self.env.now
        self.routable.append(replica)
        self.routable_by_model.setdefault(self.plans[replica.pool].config.model, []).append(replica)
        self.shortest_len = min(r.max_model_len for r in self.routable)
        self.monitor.capacity(self.env.now, replica.pool, replica.state.total_blocks)
        waiting, self.pending = self.pending, deque()
        for req in waiting:
            self._route(req)
        if waiting:
            self.pending_log.append((self.env.now, len(self.pending)))

    def _unroute(self, replica: Replica) -> None:
        self.routable.remove(replica)
        self.routable_by_model[self.plans[replica.pool].config.model].remove(replica)
        self.shortest_len = min((r.max_model_len for r in self.routable), default=0)
        self.monitor.capacity(self.env.now, replica.pool, -replica.state.total_blocks)

    def _lost(self, requests: list[Request], reason: str) -> None:
        """Requests on a replica that went away (drained past its timeout, reclaimed, failed, taken down)."""
        self.given_back["rejected" if reason else "restarted"] += len(requests)
        self._give_back(requests, reason)

    def _give_back(self, requests: list[Request], reason: str) -> None:
        """Requests whose replica went away: routed again (they restart), or rejected with ``reason``."""
        for req in requests:
            if reason:
                req.reject_reason = reason
                self.unfinished -= 1
                if self.events is not None:
                    self.events.append((self.env.now, req.request_id, "reject", 0))
                self._complete(req)
                if req.done is not None:
                    req.done.succeed()  # a closed-loop client waiting on it sends its next request
            else:
                self._route(req)
        if reason:
            self._check_done()

    def dispatch(self, prompt_tokens: int, output_tokens: int, before_step_ends: bool = False, cls: int = 0,
                 prefix: tuple[int, ...] | None = None) -> Request:
        """A request of class ``cls`` arrives now: route it, hold it at the gateway until a replica is ready, or
        reject it with a reason (``before_step_ends``: see :meth:`~sim.engine.replica.Replica.submit`;
        ``prefix``: its prefix ids from a trace)."""
        req = Request(self.arrived, self.env.now, prompt_tokens, output_tokens)
        req.cls = cls
        req.priority = self.class_priorities[cls]
        source = self.prefixes[cls]
        if source is not None:
            req.prefix, req.prefix_tokens_per_id = source(prompt_tokens, prefix)
        self.arrived += 1
        if self.rate_window_s:
            arrivals = self.arrival_times[cls]
            arrivals.append(self.env.now)
            if arrivals[0] <= self.env.now - self.rate_window_s:
                arrivals.popleft()  # keep about one window of them
        if self.events is not None:
            self.events.append((self.env.now, req.request_id, "arrive", prompt_tokens))
        total = prompt_tokens + output_tokens
        model = self.class_models[cls]
        longest = self.longest_len if model is None else self.longest_by_model[model]
        too_long = total > longest
        unservable = not (self.routable or self.can_scale)
        if self.kv_transfer is not None:  # both stages must take it, and both must be able to have replicas
            prefill_len, decode_len = self._stage_limits(model)
            too_long = prompt_tokens + 1 > prefill_len or total > decode_len
            unservable = unservable or not (self.can_serve(cls, "prefill") and (
                output_tokens == 1 or self.can_serve(cls, "decode")))
        if too_long or unservable:
            req.reject_reason = "exceeds_max_model_len" if too_long else "no_replicas"
            if self.events is not None:
                self.events.append((self.env.now, req.request_id, "reject", 0))
            self._complete(req)
            return req
        self.unfinished += 1
        self._route(req, before_step_ends)
        return req

    def _route(self, req: Request, before_step_ends: bool = False) -> None:
        role = self._stage(req) if self.kv_transfer is not None else None
        total = req.prompt_tokens + req.output_tokens  # on a prefill replica: prompt + 1 (the first token)
        model = self.class_models[req.cls]
        if model is not None:  # model-aware: only the pools serving the request's model
            eligible = [r for r in self.routable_by_model.get(model, ()) if r.max_model_len >= total]
        elif total <= self.shortest_len:
            eligible = self.routable
        else:
            eligible = [r for r in self.routable if r.max_model_len >= total]
        if role is not None:
            eligible = [r for r in eligible if self.plans[r.pool].config.role == role]
        if self.pool_rules is not None and eligible:
            pools = self.pool_rules.choose(req, self.class_names[req.cls],
                                           max(req.output_tokens, req.handoff_output), ReplicaViews(eligible))
            if pools is not None:
                eligible = [r for r in eligible if r.pool in pools]
        if not eligible:
            if self.can_serve(req.cls, role):
                self.pending.append(req)  # no ready replica can take it: it waits for one to become ready
                self.pending_log.append((self.env.now, len(self.pending)))
                return
            self._give_back([req], "no_replicas")  # no pool for its model will ever have a replica
            return
        eligible[self.router.route(req, ReplicaViews(eligible))].submit(req, before_step_ends)

    def _stage(self, req: Request) -> str:
        """Disaggregated serving: the role of the pools ``req`` goes to next. A request without a token yet goes to a
        prefill pool, which produces only its first token (its output length is held in ``handoff_output``
        meanwhile); one whose KV cache has arrived goes to a decode pool."""
        if req.generated_tokens:
            return "decode"
        if not req.handoff_output and req.output_tokens > 1:
            req.handoff_output, req.output_tokens = req.output_tokens, 1
        return "prefill"

    def _hand_off(self, req: Request, replica: Replica) -> None:
        """The prefill replica produced ``req``'s first token: send its prompt's KV cache to the decode pools over
        the replica's link (one transfer at a time), then route it there."""
        if replica.pool in self.latency_pools:  # a latency autoscaler on the prefill pool reads its part
            self.finished_by_pool[replica.pool].append(PrefillDone(req.arrival_s, req.scheduled_s, req.first_token_s))
        req.output_tokens, req.handoff_output = req.handoff_output, 0
        req.finish_s = None
        req.prefill_pool = replica.pool
        plan = self.plans[replica.pool]
        cfg = self.kv_transfer
        size_bytes = req.computed_tokens * kv_bytes_per_token(plan.model, plan.sizing.kv_dtype)
        start_s = max(self.env.now, self.link_free_s.get(replica.replica_id, 0.0))
        end_s = start_s + size_bytes / (cfg.bandwidth_gb_s * 1e9)
        self.link_free_s[replica.replica_id] = end_s
        arrive_s = end_s + cfg.latency_s
        req.kv_transfer_s = arrive_s - self.env.now
        self.transferring.append(req)
        if self.events is not None:
            self.events.append((self.env.now, req.request_id, "kv_transfer", req.computed_tokens))
        # An arrival: before any step that ends at the same instant (as trace arrivals are; see Replica.submit).
        ArrivalTimeout(self.env, arrive_s - self.env.now).callbacks.append(lambda _e: self._arrive_for_decode(req))

    def _arrive_for_decode(self, req: Request) -> None:
        self.transferring.remove(req)
        self._route(req, before_step_ends=True)

    def _finished(self, req: Request) -> None:
        self.last_progress_s = self.env.now
        if req.handoff_output:
            self._hand_off(req, self.replicas[req.replica_id])
            return
        self.unfinished -= 1
        self._complete(req)
        if req.pool in self.latency_pools:
            self.finished_by_pool[req.pool].append(req)
        if req.done is not None:
            req.done.succeed()
        self._check_done()

    def end_arrivals(self) -> None:
        """One arrival source is done; arrivals are over when every class's is."""
        self.sources -= 1
        if self.sources == 0:
            self.arrivals_over = True
            if self.can_scale:
                self.env.process(self._watch_for_stall())
        self._check_done()

    #: With arrivals over, how long (simulated seconds) the run may go without a request finishing or a replica
    #: becoming ready, while requests wait at the gateway and no replica works, before it is ended as stalled.
    STALL_S = 3600.0

    def _watch_for_stall(self):
        """End the run, marked stalled, when requests wait at the gateway and nothing has progressed for
        :attr:`STALL_S` (e.g. a pool whose replacement never finds capacity): it would otherwise never end."""
        while not self.done.triggered:
            yield self.env.timeout(60.0)
            working = any(r.has_work for r in self.routable)
            if self.unfinished and self.pending and not working and (
                    self.env.now - self.last_progress_s >= self.STALL_S) and not self.done.triggered:
                self.stalled = {"at_s": self.env.now, "waiting": len(self.pending),
                                "reason": f"requests wait at the gateway and nothing progressed for {self.STALL_S:g} s"}
                self.done.succeed(self.env.now)

    def _check_done(self) -> None:
        if self.arrivals_over and self.unfinished == 0 and not self.done.triggered:
            self.done.succeed(self.env.now)


def prefix_source(cls: int, wl, streams):
    """How a class's requests get their prefix ids (prefix caching), or None: from the trace (Mooncake
    ``hash_ids``), or one of ``shared_prefix.groups`` synthetic prefixes drawn per request."""
    shared = getattr(wl, "shared_prefix", None)
    if shared is not None:
        rng = streams.get("shared_prefix")

        def synthetic(prompt_tokens: int, _ids) -> tuple[tuple[int, ...], int]:
            group = int(rng.integers(shared.groups))
            full = min(shared.tokens, prompt_tokens) // shared.block_tokens  # only whole blocks are cached
            # Negative ids, so they never meet a trace's.
            return tuple(-(((cls * 100_003 + group) * 1_000_003) + j + 1) for j in range(full)), shared.block_tokens

        return synthetic
    if isinstance(wl, TraceWorkload) and wl.format == "mooncake":  # the one format with prefix ids
        return lambda _prompt, ids: (ids, wl.prefix_block_tokens)
    return None


def build(scenario: Scenario, deployment: Deployment, streams: Streams, spill_dir: Path | None = None) -> Fleet:
    """A ready-to-run fleet for ``scenario``: nothing is shared with any other run.

    ``spill_dir``: where request records go if the run spills them (default: ``run.spill_dir``, else a
    temporary folder).
    """
    if spill_dir is None and scenario.run.spill_dir is not None:
        spill_dir = Path(scenario.run.spill_dir)
    # The pool change points (about three per request) spill on the same scale as the records.
    if scenario.router.policy not in ROUTERS:  # a scenario changed in code (model_copy) skips the file's checks
        raise ScenarioError(scenario.name, "router.policy", unknown_name("router", scenario.router.policy, ROUTERS))
    spill = scenario.run.spill_after_requests
    env = simpy.Environment()
    plans = deployment.pools
    fleet = Fleet(
        env=env,
        deployment=deployment,
        router=ROUTERS[scenario.router.policy](streams.get("routing")),
        monitor=PoolMonitor(list(plans),
                            RowStore(spill, spill_dir / "timeseries" if spill_dir else None)),
        events=[] if scenario.run.trace_events else None,
        records=RowStore(spill, spill_dir / "requests" if spill_dir else None, keep=SUMMARY_COLUMNS),
    )
    fleet.done = env.event()
    fleet.kv_transfer = scenario.kv_transfer
    if scenario.router.rules or scenario.router.overflow:
        fleet.pool_rules = PoolRules(scenario.router.rules, scenario.router.overflow)
    fleet.add_replicas(streams)
    if scenario.fleet_autoscale is not None:
        fleet.add_fleet_autoscaler(scenario.fleet_autoscale)
    if scenario.maintenance is not None:
        fleet.maintenance_log = start_maintenance(env, fleet, scenario.maintenance, scenario.name)
        fleet.can_scale = True  # a request may wait at the gateway for a host to come back
    traffic = scenario.traffic()
    fleet.class_names = [name for name, _, _ in traffic]
    fleet.class_models = [wl.model for _, wl, _ in traffic]
    fleet.class_priorities = scenario.priorities()
    fleet.sources = len(traffic)
    fleet.arrival_times = [deque() for _ in traffic]
    fleet.prefixes = [prefix_source(cls, wl, streams if cls == 0 else PrefixedStreams(streams, f"class.{name}."))
                      for cls, (name, wl, _) in enumerate(traffic)]
    for cls, (name, wl, _) in enumerate(traffic):
        # The default class draws from the streams by their plain names; a further class from its own.
        own = streams if cls == 0 else PrefixedStreams(streams, f"class.{name}.")
        dispatch = fleet.dispatch if cls == 0 else partial(fleet.dispatch, cls=cls)
        if isinstance(wl, ClosedLoopWorkload):
            ClosedLoop(env, wl, own, dispatch, fleet.end_arrivals)
            fleet.workload.append(None)
        else:
            arrays = workload_arrays(wl, own)
            fleet.workload.append(arrays)
            fleet.replays.append(replay(env, arrays, dispatch, fleet.end_arrivals))
            env.process(fleet.replays[-1])
    return fleet

"""The scenario schema of a pool's life: replica start-up phases, nodes, billing, and its autoscaler.

Frozen pydantic models, part of :mod:`sim.config` (split out to keep each file small). Defaults come from
``../shared/reference/gpu-sharing-autoscaling-cost.md`` sections 1, 2 and 6, cited per field.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.limits import MAX_REPLICAS

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)


class FixedDuration(BaseModel):
    model_config = _FROZEN
    dist: Literal["fixed"] = "fixed"
    s: float = Field(ge=0)


class UniformDuration(BaseModel):
    model_config = _FROZEN
    dist: Literal["uniform"] = "uniform"
    low_s: float = Field(ge=0)
    high_s: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> UniformDuration:
        if self.high_s < self.low_s:
            raise ValueError(f"high_s ({self.high_s}) must be at least low_s ({self.low_s})")
        return self


class LognormalDuration(BaseModel):
    """Log-normal with median ``median_s``; ``sigma`` is the standard deviation of its logarithm."""

    model_config = _FROZEN
    dist: Literal["lognormal"] = "lognormal"
    median_s: float = Field(gt=0)
    sigma: float = Field(default=0.3, ge=0, le=3)


class ExponentialDuration(BaseModel):
    model_config = _FROZEN
    dist: Literal["exponential"] = "exponential"
    mean_s: float = Field(gt=0)


Duration = Annotated[FixedDuration | UniformDuration | LognormalDuration | ExponentialDuration,
                     Field(discriminator="dist")]


class LifecycleConfig(BaseModel):
    """How long a new replica takes to serve, phase by phase (reference CS-1), and how it leaves (CS-4).

    Phases: node provisioning (only when no node of the pool has free GPUs), image pull (only on a node that has
    not pulled the image yet), weight loading (the model's weight bytes / ``weight_load_gb_s``), engine warm-up
    (torch.compile and CUDA-graph capture), readiness probe.
    """

    model_config = _FROZEN
    node_provision_s: Duration = Field(default=LognormalDuration(median_s=180, sigma=0.4), description="NODE-5: "
                                       "VM boot to node Ready, median ~180 s, range 60-300 s for 1-GPU nodes")
    image_gb: float = Field(default=10.0, ge=0, description="container image size (vLLM-class images are multi-GB)")
    image_pull_gb_s: float = Field(default=0.2, gt=0, description="CS-1.2: 0.1-0.3 GB/s from a registry")
    weight_load_gb_s: float = Field(default=1.0, gt=0, description="CS-1.3: network or object storage 0.5-2 GB/s; "
                                    "local NVMe 2-7; page cache 5-10")
    warmup_s: Duration = Field(default=LognormalDuration(median_s=45, sigma=0.35), description="CS-1.4/5: "
                               "torch.compile 20-90 s uncached plus CUDA graphs 10-60 s (0 with enforce-eager)")
    readiness_s: Duration = Field(default=UniformDuration(low_s=0, high_s=10), description="CS-1.6: up to one "
                                  "readiness-probe period (10 s)")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="CS-4: terminationGracePeriodSeconds; requests "
                                   "still running then are re-queued or failed")
    on_drain_timeout: Literal["requeue", "fail"] = Field(default="requeue", description="requeue: sent to another "
                                                         "replica and recomputed from the start; fail: rejected")


class NodesConfig(BaseModel):
    """The machines a pool's GPUs come in: a new node is provisioned when no node has enough free GPUs."""

    model_config = _FROZEN
    gpus_per_node: int | None = Field(default=None, gt=0, le=64, description="default: one replica's GPUs "
                                      "(tensor_parallel)")
    release_after_idle_s: float = Field(default=600.0, ge=0, description="how long an empty node is kept (and "
                                        "billed) before release; the Cluster Autoscaler waits 600 s (NODE-1)")
    stockout_probability: float = Field(default=0.0, ge=0, le=1, description="chance that a provisioning attempt "
                                        "finds no capacity (GPU stock-outs, common for H100; NODE-5)")
    provision_timeout_s: float = Field(default=900.0, gt=0, description="a failed attempt is given up after this "
                                       "(Cluster Autoscaler max-node-provision-time, 15 min)")
    retry_backoff_s: float = Field(default=300.0, ge=0, description="wait before the next attempt")


class SpotConfig(BaseModel):
    """The pool runs on spot capacity: each node is reclaimed as a Poisson process of ``reclaims_per_gpu_hour`` per
    GPU, after ``notice_s`` of warning (AWS 120 s, GCP and Azure 30 s; reference SPOT-1). On notice its replicas stop
    taking requests; at the deadline what is still on them is re-queued or failed. The pool replaces them (a
    ReplicaSet keeps its count), on new nodes."""

    model_config = _FROZEN
    reclaims_per_gpu_hour: float = Field(gt=0, description="per GPU: a node of G GPUs is reclaimed at G times this "
                                         "rate. AWS Advisor's 10-20%/month bucket, ~0.15 per instance-month, is 2e-4 "
                                         "per instance-hour: 2e-4 for 1-GPU instances, 2.5e-5 for 8-GPU ones")
    notice_s: float = Field(default=120.0, ge=0)
    on_reclaim: Literal["requeue", "fail"] = "requeue"


class FailureConfig(BaseModel):
    """GPU or node failures: each node fails as a Poisson process with ``mtbf_gpu_hours`` per GPU, without notice;
    what was on it is re-queued or failed, and the pool replaces the lost replicas."""

    model_config = _FROZEN
    mtbf_gpu_hours: float = Field(gt=0)
    on_failure: Literal["requeue", "fail"] = "requeue"


class BillingConfig(BaseModel):
    """How a node's time is billed: rounded up to ``granularity_s``, at least ``minimum_s`` (PR-1: AWS and GCP bill
    per second after a 60 s minimum; RunPod per second with a 10 s minimum). 0: exact seconds, no minimum."""

    model_config = _FROZEN
    granularity_s: float = Field(default=0.0, ge=0, description="1: per second, 60: per minute, 3600: per hour")
    minimum_s: float = Field(default=0.0, ge=0)


class MetricTarget(BaseModel):
    """One HPA metric and its target.

    Per-pod metrics (``Pods`` type, ``AverageValue`` target): ``concurrency`` (running + waiting requests),
    ``queue_length`` (waiting requests, vLLM's ``num_requests_waiting``), ``kv_cache_utilization`` (0-1),
    ``gpu_utilization`` (busy fraction over the scrape interval, 0-1). External metrics: ``request_rate``
    (requests/s arriving at the fleet over ``window_s``; ``AverageValue``: the target is per replica) and latency
    percentiles ``ttft_p90_s``, ``tpot_p50_s``, ``e2e_p99_s``, ... (over requests finished in the last ``window_s``;
    ``Value`` target).
    """

    model_config = _FROZEN
    name: str
    target: float = Field(gt=0)
    window_s: float = Field(default=60.0, gt=0, description="for request_rate and latency percentiles")

    @model_validator(mode="after")
    def _known(self) -> MetricTarget:
        if metric_kind(self.name) is None:
            raise ValueError(f"unknown metric {self.name!r}; allowed: {', '.join(POD_METRICS)}, request_rate, or a "
                             "latency percentile such as ttft_p90_s (ttft, tpot, e2e or queue; p1-p99)")
        return self


#: Per-pod gauges.
POD_METRICS = ("concurrency", "queue_length", "kv_cache_utilization", "gpu_utilization")
_LATENCY = re.compile(r"^(ttft|tpot|e2e|queue)_p([1-9][0-9]?)_s$")


def metric_kind(name: str) -> str | None:
    """``pods``, ``rate`` or ``latency`` for a known metric name, else None."""
    if name in POD_METRICS:
        return "pods"
    if name == "request_rate":
        return "rate"
    return "latency" if _LATENCY.match(name) else None


def latency_metric(name: str) -> tuple[str, float]:
    """``ttft_p90_s`` -> (``ttft_s``, 0.9)."""
    m = _LATENCY.match(name)
    return f"{m.group(1)}_s", int(m.group(2)) / 100


class RatePolicyConfig(BaseModel):
    model_config = _FROZEN
    type: Literal["pods", "percent"]
    value: int = Field(gt=0)
    period_s: float = Field(gt=0, le=1800)


class DirectionConfig(BaseModel):
    model_config = _FROZEN
    stabilization_window_s: float = Field(ge=0, le=3600)
    select_policy: Literal["max", "min", "disabled"] = "max"
    policies: tuple[RatePolicyConfig, ...] = Field(min_length=1)


class BehaviorConfig(BaseModel):
    """HPA ``behavior`` (reference Table 1.1 defaults)."""

    model_config = _FROZEN
    scale_up: DirectionConfig = DirectionConfig(stabilization_window_s=0, policies=(
        RatePolicyConfig(type="percent", value=100, period_s=15), RatePolicyConfig(type="pods", value=4, period_s=15)))
    scale_down: DirectionConfig = DirectionConfig(stabilization_window_s=300, policies=(
        RatePolicyConfig(type="percent", value=100, period_s=15),))


class _Bounded(BaseModel):
    """An autoscaler with ``min_replicas`` and ``max_replicas``."""

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas: {self.min_replicas} must not exceed max_replicas ({self.max_replicas})")
        return self


class HpaConfig(_Bounded):
    """Kubernetes HPA (reference section 1.1): every ``sync_period_s`` the max over ``metrics`` of each metric's
    proposal, stabilised and rate-limited by ``behavior``, within ``[min_replicas, max_replicas]``. Metrics are
    scraped every ``scrape_interval_s`` and reach the HPA ``metric_delay_s`` later."""

    model_config = _FROZEN
    policy: Literal["hpa"] = "hpa"
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(gt=0, le=10_000)
    metrics: tuple[MetricTarget, ...] = Field(min_length=1)
    sync_period_s: float = Field(default=15.0, gt=0)
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    behavior: BehaviorConfig = BehaviorConfig()
    scrape_interval_s: float = Field(default=15.0, gt=0, description="Prometheus scrape interval (15-30 s)")
    metric_delay_s: float = Field(default=0.0, ge=0, description="pipeline delay after a scrape")


class KedaTrigger(BaseModel):
    """A KEDA trigger: ``queue_length`` or ``concurrency`` (summed over the ready pods), ``request_rate``, or a
    latency percentile; ``target`` per replica (``AverageValue``, KEDA's default metric type) except for
    latencies (``Value``); active when the value is above ``activation`` (KEDA-3)."""

    model_config = _FROZEN
    name: str
    target: float = Field(gt=0)
    activation: float = Field(default=0.0, ge=0)
    window_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _known(self) -> KedaTrigger:
        if self.name not in ("queue_length", "concurrency", "request_rate") and metric_kind(self.name) != "latency":
            raise ValueError(f"unknown trigger {self.name!r}; allowed: queue_length, concurrency, request_rate, or a "
                             "latency percentile such as ttft_p90_s")
        return self


class KedaConfig(_Bounded):
    """KEDA on top of an HPA (reference section 1.2): every ``polling_interval_s`` KEDA activates the pool from 0 to
    1 replica when a trigger is active, and scales it to 0 after ``cooldown_s`` without an active trigger (when
    ``min_replicas`` is 0); between 1 and ``max_replicas`` the HPA it creates decides on its own sync period."""

    model_config = _FROZEN
    policy: Literal["keda"] = "keda"
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=100, gt=0, le=10_000)
    triggers: tuple[KedaTrigger, ...] = Field(min_length=1)
    polling_interval_s: float = Field(default=30.0, gt=0)
    cooldown_s: float = Field(default=300.0, ge=0)
    sync_period_s: float = Field(default=15.0, gt=0)
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    behavior: BehaviorConfig = BehaviorConfig()


class KpaConfig(_Bounded):
    """Knative Pod Autoscaler (reference section 1.3, Table 1.3 defaults): every ``tick_s`` it compares the stable
    (60 s) and panic (6 s) averages of the pods' total concurrency (or requests/s) with ``target x
    target_utilization`` per pod. Only ready pods count as capacity."""

    model_config = _FROZEN
    policy: Literal["kpa"] = "kpa"
    metric: Literal["concurrency", "rps"] = "concurrency"
    target: float = Field(default=100.0, gt=0, description="per pod; default container-concurrency-target-default "
                          "100, or requests-per-second-target-default 200 with metric rps")
    target_utilization: float = Field(default=0.7, gt=0, le=1)
    stable_window_s: float = Field(default=60.0, ge=6, le=3600)
    panic_window_percentage: float = Field(default=10.0, ge=1, le=100)
    panic_threshold_percentage: float = Field(default=200.0, ge=110, le=1000)
    max_scale_up_rate: float = Field(default=1000.0, gt=1)
    max_scale_down_rate: float = Field(default=2.0, gt=1)
    scale_down_delay_s: float = Field(default=0.0, ge=0, le=3600)
    scale_to_zero_grace_s: float = Field(default=30.0, ge=0)
    min_replicas: int = Field(default=0, ge=0, description="min-scale")
    max_replicas: int = Field(gt=0, le=10_000, description="max-scale")
    activation_scale: int = Field(default=1, ge=1)
    tick_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _rps_default(cls, data):
        """Table 1.3: the target's default depends on the metric (200 requests/s per pod with ``rps``)."""
        if isinstance(data, dict) and data.get("metric") == "rps" and "target" not in data:
            return {**data, "target": 200.0}
        return data


class ScheduleEntry(BaseModel):
    model_config = _FROZEN
    at_s: float = Field(ge=0, description="seconds into the period (e.g. 8 h = 28800 into a day)")
    replicas: int = Field(ge=0, le=MAX_REPLICAS)


class ScheduledConfig(BaseModel):
    """A time-of-day table: from each entry's ``at_s`` (within every ``period_s``) the pool runs ``replicas``."""

    model_config = _FROZEN
    policy: Literal["scheduled"] = "scheduled"
    schedule: tuple[ScheduleEntry, ...] = Field(min_length=1)
    period_s: float = Field(default=86_400.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ScheduledConfig:
        times = [e.at_s for e in self.schedule]
        if times != sorted(set(times)) or times[-1] >= self.period_s:
            raise ValueError(f"schedule: times must increase strictly and stay below period_s ({self.period_s:g}); "
                             f"got {times}")
        if all(e.replicas == 0 for e in self.schedule):
            raise ValueError("schedule: every entry has 0 replicas, so the pool would never serve; give some entry "
                             "replicas >= 1 (or remove the pool)")
        return self


class PredictiveConfig(_Bounded):
    """Forecast the arrival rate ``lead_s`` ahead (default: the pool's typical cold start) from the last
    ``history_s`` (Holt's linear trend over ``bucket_s`` buckets), and run enough replicas for it at
    ``capacity_rps`` each with ``headroom``; scale-down follows the max of the last ``scale_down_delay_s``."""

    model_config = _FROZEN
    policy: Literal["predictive"] = "predictive"
    capacity_rps: float = Field(gt=0, description="requests/s one replica serves within its SLO (measure it)")
    headroom: float = Field(default=0.2, ge=0, le=10)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(gt=0, le=10_000)
    period_s: float = Field(default=30.0, gt=0)
    bucket_s: float = Field(default=60.0, gt=0)
    history_s: float = Field(default=900.0, gt=0)
    lead_s: float | None = Field(default=None, ge=0, description="default: the sum of the start-up phases' "
                                 "typical durations")
    alpha: float = Field(default=0.5, gt=0, le=1, description="level smoothing")
    beta: float = Field(default=0.3, ge=0, le=1, description="trend smoothing")
    scale_down_delay_s: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _history(self) -> PredictiveConfig:
        if self.history_s < 2 * self.bucket_s:
            raise ValueError(f"history_s: {self.history_s:g} s must hold at least two buckets of bucket_s "
                             f"{self.bucket_s:g} s")
        return self


Autoscale = Annotated[HpaConfig | KedaConfig | KpaConfig | ScheduledConfig | PredictiveConfig,
                      Field(discriminator="policy")]


class FleetAutoscaleConfig(BaseModel):
    """One autoscaler across pools (heterogeneous scaling): every ``period_s`` it sizes the fleet for the arrival
    rate (observed over ``window_s``, or forecast one cold start ahead) with ``headroom``, and fills the pools in
    ``strategy`` order, each replica worth its pool's ``capacity_rps``:

    - ``priority``: ``pools`` in the order given (e.g. an L4 baseline, then burst to H100); shrinks in reverse.
    - ``cheapest``: the lowest cost per request first (USD per hour / capacity: the cost per token at the mix the
      capacities were measured for).
    - ``spot_first``: spot pools first, then on-demand ones, each group cheapest first; replicas of a pool that wait
      for capacity (stock-outs) do not count, so the next pool covers them until they arrive.

    Scale-down of a pool follows the max of its targets over ``scale_down_delay_s``.
    """

    model_config = _FROZEN
    pools: tuple[str, ...] = Field(min_length=1)
    strategy: Literal["priority", "cheapest", "spot_first"] = "priority"
    capacity_rps: dict[str, float] = Field(description="requests/s one replica of each pool serves (measure it)")
    min_replicas: dict[str, int] = Field(default_factory=dict)
    max_replicas: dict[str, int] = Field(default_factory=dict)
    demand: Literal["observed", "forecast"] = "observed"
    window_s: float = Field(default=60.0, gt=0)
    headroom: float = Field(default=0.2, ge=0, le=10)
    period_s: float = Field(default=15.0, gt=0)
    scale_down_delay_s: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _complete(self) -> FleetAutoscaleConfig:
        for i, p in enumerate(self.pools):
            if p in self.pools[:i]:
                raise ValueError(f"pools.{i}: {p!r} is listed twice")
        for table in ("capacity_rps", "min_replicas", "max_replicas"):
            extra = set(getattr(self, table)) - set(self.pools)
            if extra:
                raise ValueError(f"{table}.{sorted(extra)[0]}: not one of pools {list(self.pools)}, which this "
                                 "autoscaler sizes")
        missing = [p for p in self.pools if p not in self.capacity_rps]
        if missing:
            raise ValueError(f"capacity_rps is missing for {missing}")
        for p, v in self.capacity_rps.items():
            if v <= 0:
                raise ValueError(f"capacity_rps.{p}: must be positive (requests/s one replica serves), got {v:g}")
        for p in self.pools:
            lo, hi = self.min_replicas.get(p, 0), self.max_replicas.get(p, 1000)
            if lo < 0:
                raise ValueError(f"min_replicas.{p}: must be 0 or more, got {lo}")
            if hi > MAX_REPLICAS:
                raise ValueError(f"max_replicas.{p}: at most {MAX_REPLICAS} replicas per pool, got {hi}")
            if lo > hi:
                raise ValueError(f"min_replicas.{p}: {lo} is above max_replicas ({hi})")
        return self

"""The scenario schema of a pool's life: replica start-up phases, nodes, billing, and its autoscaler.

Frozen pydantic models, part of :mod:`sim.config` (split out to keep each file small). Defaults come from
``../shared/reference/gpu-sharing-autoscaling-cost.md`` sections 1, 2 and 6, cited per field.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


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
    release_after_idle_s: float = Field(default=0.0, ge=0, description="how long an empty node is kept (and "
                                        "billed) before release; the Cluster Autoscaler waits 600 s (NODE-1)")


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


class HpaConfig(BaseModel):
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

    @model_validator(mode="after")
    def _bounds(self) -> HpaConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        return self


Autoscale = HpaConfig

"""The scenario schema: frozen pydantic models, one per block of the scenario file.

Units are in the field names. Fixed option sets are ``Literal`` types checked at load; policy names
(router, scheduler) are registry keys checked against their registries by :mod:`sim.scenario`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sim.engine.profiles import engine_defaults, engine_profiles
from sim.errors import unknown_name
from sim.limits import MAX_CLIENTS, MAX_REPLICAS, MAX_REQUESTS, MAX_TOKENS
from sim.scaling_config import (
    POD_METRICS,
    Autoscale,
    BillingConfig,
    FailureConfig,
    FleetAutoscaleConfig,
    LifecycleConfig,
    NodesConfig,
    SpotConfig,
)
from sim.workload.arrivals import ArrivalProcess
from sim.workload.lengths import LengthDist

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)

WeightPrecision = Literal["bf16", "fp16", "fp8", "int8", "int4"]
KvCacheDtype = Literal["auto", "bf16", "fp16", "fp8"]
PriceTier = Literal["on_demand", "spot", "reserved", "self_hosted"]


class SpeculativeConfig(BaseModel):
    """Speculative decoding: each decode step drafts ``num_tokens`` tokens and the target model verifies them in one
    pass; each draft token is accepted with probability ``acceptance_rate`` until the first rejection, and the pass
    always yields one more token, so a step gives ``(1 - a^(k+1)) / (1 - a)`` tokens on average. The drafter costs
    ``num_tokens`` decode steps of ``draft_model`` (priced by the kernel model on the same GPU), or
    ``draft_step_s`` per step (n-gram lookup: about 0; EAGLE heads: small)."""

    model_config = _FROZEN
    num_tokens: int = Field(gt=0, le=16)
    acceptance_rate: float = Field(gt=0, lt=1)
    draft_model: str | None = Field(default=None, description="catalog key of a small draft model")
    draft_step_s: float | None = Field(default=None, ge=0, description="drafting cost per step without a draft "
                                       "model")

    @model_validator(mode="after")
    def _one_drafter(self):
        # Without either, drafting would silently cost nothing: the user must say so (draft_step_s: 0).
        if (self.draft_model is None) == (self.draft_step_s is None):
            raise ValueError("give one of draft_model (a catalog key: the draft is priced on the same GPU) or "
                             "draft_step_s (drafting seconds per step: 0 for n-gram lookup)"
                             + ("" if self.draft_model is None else ", not both"))
        return self


class EngineConfig(BaseModel):
    """Continuous-batching engine settings, named as in vLLM.

    ``profile`` picks a serving stack (:mod:`sim.engine.profiles`: vllm_v1, vllm_v0, trtllm, sglang, tgi, triton,
    ollama); the fields a scenario leaves out take that profile's defaults (the ones shown here are vLLM V1's).
    """

    model_config = _FROZEN
    profile: str = Field(default="vllm_v1", description="serving stack whose defaults fill the fields not given")
    scheduler: str = Field(default="vllm_v1", description="batch-formation policy (registry key); default: the "
                           "profile's")
    max_num_seqs: int = Field(default=256, gt=0)
    max_num_batched_tokens: int | None = Field(default=8192, gt=0, le=MAX_TOKENS, description="tokens per step; null: "
                                               "max(max_model_len, 2048), the whole-prompt rule of vLLM V0")
    block_size: int = Field(default=16, gt=0, description="tokens per KV-cache block")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    enable_chunked_prefill: bool = True
    batch_delay_s: float = Field(default=0.0, ge=0, description="static batching (scheduler: static): how long the "
                                 "oldest queued request may wait for a fuller batch (Triton's max queue delay)")
    max_model_len: int | None = Field(default=None, gt=0, description="default: the model's context length")
    num_gpu_blocks_override: int | None = Field(
        default=None, gt=0, description="use this many KV blocks instead of sizing from memory (as in vLLM)"
    )
    activation_reserve_gib: float | None = Field(
        default=None, ge=0, description="memory kept for activations per GPU; default: estimated from the model"
    )
    scheduling_policy: Literal["fcfs", "priority"] = Field(default="fcfs", description="as vLLM's: priority "
                                                          "admits waiting requests by their class's priority first")
    speculative: SpeculativeConfig | None = Field(default=None, description="speculative decoding (steps one "
                                                  "iteration at a time)")
    enable_prefix_caching: bool = Field(default=True, description="as vLLM v1 (on by default): requests with "
                                        "prefix ids skip the prefill of their cached prefix")
    stepping: Literal["fast", "iteration"] = Field(
        default="fast", description="fast: runs of whole-batch decode steps at once (same results); iteration: "
        "one event per step (the reference)")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data):
        """Fill the fields not given from the profile's defaults (a profile is data: sim/engine/profiles)."""
        if not isinstance(data, dict):
            return data
        profile = data.get("profile", "vllm_v1")
        if not isinstance(profile, str) or profile not in engine_profiles():
            return data  # the profile field's own check names it
        return {**engine_defaults(profile), **data}

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str) -> str:
        if profile not in engine_profiles():
            raise ValueError(unknown_name("engine profile", profile, engine_profiles()))
        return profile


class RooflinePerf(BaseModel):
    """First-version kernel model: per-operator roofline times flat efficiency factors.

    Defaults are round figures from public vLLM/H100 practice, not fits; issue #3 replaces them with
    calibrated curves.
    """

    model_config = _FROZEN
    model: Literal["roofline"] = "roofline"
    gemm_compute_efficiency: float = Field(default=0.70, gt=0, le=1)
    attention_compute_efficiency: float = Field(default=0.50, gt=0, le=1)
    memory_efficiency: float = Field(default=0.80, gt=0, le=1)
    allreduce_efficiency: float = Field(default=0.70, gt=0, le=1)
    allreduce_latency_s: float = Field(default=10e-6, ge=0)
    kernel_floor_s: float = Field(default=2e-6, ge=0, description="minimum time of any one kernel")
    step_overhead_s: float = Field(default=2e-3, ge=0, description="CPU scheduling overhead per step")
    per_sequence_overhead_s: float = Field(default=10e-6, ge=0, description="CPU overhead per sequence per step")
    eager_overhead_per_layer_s: float = Field(
        default=0.0, ge=0, description="extra host time per layer of a step above cudagraph_max_tokens")
    cudagraph_max_tokens: int = Field(default=512, ge=0, description="largest step replayed as a CUDA graph")


class KernelPerf(BaseModel):
    """Calibrated kernel model (:mod:`sim.perf.kernel`): measured efficiency curves for H100 SXM and L40S,
    spec transfer for every other GPU.

    ``calibrated: false`` ignores the GPU's own calibration (spec transfer only); ``calibration_file`` uses a
    file written by ``fleetsim calibrate``. The CPU overhead per step defaults to the figures fitted end to end
    on measured vLLM serving (see the README's fidelity section).
    """

    model_config = _FROZEN
    model: Literal["kernel"] = "kernel"
    calibrated: bool = True
    calibration_file: str | None = None
    step_overhead_s: float | None = Field(default=None, ge=0, description="default: fitted end to end")
    per_sequence_overhead_s: float | None = Field(default=None, ge=0, description="default: fitted end to end")
    eager_overhead_per_layer_s: float | None = Field(
        default=None, ge=0, description="extra host time per layer of a step above cudagraph_max_tokens; "
        "default: fitted")
    cudagraph_max_tokens: int = Field(default=512, ge=0, description="largest step replayed as a CUDA graph")
    gpu_time_scale: float | None = Field(default=None, gt=0, le=1000, description="GPU time x this (a serving stack's "
                                         "kernels against vLLM's measured ones); default: the engine profile's")
    overlap_host: bool | None = Field(default=None, description="host work hidden behind the GPU's (a step takes "
                                      "the longer of the two); default: the engine profile's")


class ConstantPerf(BaseModel):
    """Test double: every step takes ``step_s`` plus ``per_token_s`` per scheduled token."""

    model_config = _FROZEN
    model: Literal["constant"] = "constant"
    step_s: float = Field(gt=0)
    per_token_s: float = Field(default=0.0, ge=0)


PerfConfig = Annotated[KernelPerf | RooflinePerf | ConstantPerf, Field(discriminator="model")]


class PriceConfig(BaseModel):
    """Which catalog price a pool pays, or an explicit figure."""

    model_config = _FROZEN
    provider: str | None = Field(default=None, description="default: the GPU's default catalog price")
    tier: PriceTier = "on_demand"
    instance: str | None = None
    usd_per_gpu_hour: float | None = Field(default=None, ge=0, description="overrides the catalog")


_GROUP = ("pools naming the same group share physical GPUs (different models or tenants on one GPU, each "
          "replica in its own VM or instance); default: the pool's own GPUs")

#: NVIDIA AI Enterprise subscription, $4,500 per GPU-year over 8,760 hours (reference Table 3.5, VG-10).
NVAIE_USD_PER_GPU_HOUR = 4500 / 8760


class MigSharing(BaseModel):
    """Each replica runs on one MIG GPU instance of ``profile`` (e.g. ``3g.40gb`` on an H100): isolated, with
    the profile's SMs and memory and a proportional share of HBM bandwidth. Instances are packed first-fit onto
    the pool's GPUs (as many per GPU as NVIDIA's placement rules allow); a partly used GPU is paid whole."""

    model_config = _FROZEN
    mode: Literal["mig"] = "mig"
    profile: str
    group: str | None = Field(default=None, description=_GROUP)


class PassthroughSharing(BaseModel):
    """Each replica's GPUs are passed through whole to one VM; ``hypervisor_overhead`` is added to every step's
    time as a fraction (VMware measured 94.4-100% of bare-metal speed with one VM per GPU: 0 to 0.06; reference
    section 3, VG-7)."""

    model_config = _FROZEN
    mode: Literal["passthrough"] = "passthrough"
    hypervisor_overhead: float = Field(default=0.0, ge=0, le=1)


class _TimeSliced(BaseModel):
    """Settings shared by the time-sliced modes (reference VG-4, VG-6, VG-7)."""

    model_config = _FROZEN
    time_slice_ms: float | None = Field(default=None, ge=1, le=30, description="default: 2 ms when the profile "
                                        "allows <= 8 VMs per GPU, else 1 ms (VG-4); 1-30 ms allowed")
    switch_cost_us: float = Field(default=50.0, ge=0, le=10_000, description="GPU time lost at each switch "
                                  "to another VM's work (NVIDIA publishes none; VG-7 suggests 25-100 us)")
    fidelity: Literal["fluid", "quantum"] = Field(default="fluid", description="fluid: processor sharing at each "
                                                  "VM's time fraction; quantum: every slice simulated")
    group: str | None = Field(default=None, description=_GROUP)


class VgpuSharing(_TimeSliced):
    """Each replica runs in a VM with a time-sliced vGPU of ``profile`` (e.g. ``L4-6C``): the profile's frame
    buffer is the VM's GPU memory, and the VMs on one GPU take turns on the whole GPU under ``scheduler``
    (reference section 3). An NVIDIA AI Enterprise licence is paid per physical GPU."""

    mode: Literal["vgpu"] = "vgpu"
    profile: str
    scheduler: Literal["best_effort", "equal_share", "fixed_share"] = "best_effort"
    mixed_sizes: bool = Field(default=False, description="allow profiles of different sizes on one GPU (vGPU 17 "
                              "mixed-size mode: lower maximum counts; fixed share not allowed)")
    license_usd_per_gpu_hour: float = Field(default=NVAIE_USD_PER_GPU_HOUR, ge=0, description="NVAIE licence per "
                                            "physical GPU (default $4,500 per GPU-year; ~$1 on cloud marketplaces)")
    hypervisor_overhead: float = Field(default=0.0, ge=0, le=1, description="added to every step's time as a "
                                       "fraction (VG-7: one VM per GPU ran at 94.4-100% of bare metal: 0 to 0.06)")


class TimeSliceSharing(_TimeSliced):
    """Kubernetes GPU time-slicing (NVIDIA device plugin, ``replicas: N``): up to ``replicas_per_gpu`` replicas
    per GPU take turns, work-conserving, with no memory isolation: each replica's engine gets
    ``memory_fraction`` of the GPU's memory and the fractions on one GPU must sum to at most 1 (SH-1)."""

    mode: Literal["timeslice"] = "timeslice"
    replicas_per_gpu: int = Field(default=2, ge=1, le=48)
    memory_fraction: float | None = Field(default=None, gt=0, le=1, description="default: 1 / replicas_per_gpu")


class MpsSharing(BaseModel):
    """CUDA MPS: up to ``replicas_per_gpu`` replicas per GPU run kernels concurrently, each capped at
    ``active_thread_percentage`` of the SMs and ``memory_fraction`` of the memory (SH-2). Each runs as a GPU with
    that share of the SMs and of the HBM bandwidth (a conservative partition); when the active clients' shares add
    up to more than 100% they slow down in proportion."""

    model_config = _FROZEN
    mode: Literal["mps"] = "mps"
    replicas_per_gpu: int = Field(default=2, ge=1, le=48)
    active_thread_percentage: float | None = Field(default=None, gt=0, le=100, description="default: 100 / "
                                                   "replicas_per_gpu")
    memory_fraction: float | None = Field(default=None, gt=0, le=1, description="default: 1 / replicas_per_gpu")
    group: str | None = Field(default=None, description=_GROUP)


Sharing = Annotated[MigSharing | PassthroughSharing | VgpuSharing | TimeSliceSharing | MpsSharing,
                    Field(discriminator="mode")]


class PoolConfig(BaseModel):
    """A set of identical replicas: GPU type x model x precision x tensor parallelism x engine x price."""

    model_config = _FROZEN
    gpu: str
    model: str = Field(description="catalog key, or a path to a Hugging Face config.json")
    precision: WeightPrecision = "bf16"
    kv_cache_dtype: KvCacheDtype = "auto"
    tensor_parallel: int = Field(default=1, gt=0, le=64)
    pipeline_parallel: int = Field(default=1, gt=0, le=16, description="pipeline stages (each holds a share of the "
                                   "layers on its own tensor_parallel GPUs)")
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    engine: EngineConfig = EngineConfig()
    perf: PerfConfig = KernelPerf()
    price: PriceConfig = PriceConfig()
    sharing: Sharing | None = Field(default=None, description="GPU sharing; default: whole GPUs, bare metal")
    autoscale: Autoscale | None = Field(default=None, description="default: a fixed number of replicas")
    lifecycle: LifecycleConfig = LifecycleConfig()
    nodes: NodesConfig = NodesConfig()
    billing: BillingConfig = BillingConfig()
    spot: SpotConfig | None = Field(default=None, description="spot capacity: reclaimed with notice")
    failures: FailureConfig | None = Field(default=None, description="GPU/node failures")
    role: Literal["both", "prefill", "decode"] = Field(default="both", description="disaggregated serving: "
                                                        "prefill pools compute prompts and first tokens, then hand "
                                                        "the KV cache to a decode pool of the same model")

    @field_validator("perf", mode="before")
    @classmethod
    def _kernel_by_default(cls, perf):
        """A perf block without ``model`` refines the default, the kernel model (``perf: {calibrated: false}``, or
        ``--set pools.X.perf.calibrated=false``), rather than failing for want of the kind."""
        return {"model": "kernel", **perf} if isinstance(perf, dict) and "model" not in perf else perf

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @model_validator(mode="after")
    def _scalable(self) -> PoolConfig:
        per_node = self.nodes.gpus_per_node
        if per_node is not None and per_node < self.gpus_per_replica:
            raise ValueError(f"nodes.gpus_per_node ({per_node}) is less than tensor_parallel ({self.tensor_parallel}) "
                             f"x pipeline_parallel ({self.pipeline_parallel}):"
                             " a replica's GPUs are on one node")
        scale = self.autoscale
        if scale is not None and scale.policy == "hpa":
            if scale.min_replicas == 0 and all(m.name in POD_METRICS for m in scale.metrics):
                raise ValueError("autoscale.min_replicas 0 needs an external metric (request_rate or a latency "
                                 "percentile): with only per-pod metrics an HPA at zero replicas has nothing to read "
                                 "(HPA-13)")
            if self.replicas == 0 and scale.min_replicas > 0:
                raise ValueError(f"replicas 0 with autoscale.min_replicas {scale.min_replicas}: an HPA stands aside "
                                 "when its workload is at zero replicas (HPA-13); start with replicas >= 1, or set "
                                 "min_replicas: 0")
        dynamic = self.autoscale is not None or self.spot is not None or self.failures is not None
        if dynamic and self.sharing is not None and self.sharing.mode != "passthrough":
            raise ValueError(f"autoscaling, spot or failures on a pool with sharing mode {self.sharing.mode!r} are not "
                             "supported: replicas on shared GPUs are placed once, at the start; use whole-GPU or "
                             "passthrough pools")
        shared = self.sharing is not None and self.sharing.mode != "passthrough"
        if shared and self.billing != type(self.billing)():  # the default survives a dump and a reload
            # Its GPUs live the whole run and are paid by the second: a billing block would be silently ignored.
            raise ValueError(f"billing on a pool with sharing mode {self.sharing.mode!r} is not supported: its "
                             "physical GPUs are placed once and billed by the second for the whole run; remove "
                             "billing, or use a whole-GPU or passthrough pool")
        return self


class SharedPrefix(BaseModel):
    """Synthetic shared prompt prefixes (system prompts, few-shot templates): each request's prompt starts with one
    of ``groups`` prefixes of ``tokens`` tokens, chosen uniformly (a prompt shorter than the prefix holds only its
    start). Drives prefix caching for synthetic traffic."""

    model_config = _FROZEN
    tokens: int = Field(gt=0, le=MAX_TOKENS)
    groups: int = Field(default=1, gt=0, le=MAX_REQUESTS)
    block_tokens: int = Field(default=16, gt=0, le=MAX_TOKENS, description="prefix-cache granularity (vLLM's block "
                              "size)")


class _BoundedWorkload(BaseModel):
    model_config = _FROZEN
    num_requests: int | None = Field(default=None, gt=0, le=MAX_REQUESTS)
    duration_s: float | None = Field(default=None, gt=0, description="no arrivals after this time")

    @model_validator(mode="after")
    def _bounded(self):
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("give num_requests or duration_s (or both) so the workload ends")
        return self


class OpenLoopWorkload(_BoundedWorkload):
    """Requests arrive by ``arrival`` whatever the fleet does; lengths drawn independently."""

    type: Literal["open_loop"] = "open_loop"
    arrival: ArrivalProcess
    prompt_tokens: LengthDist
    output_tokens: LengthDist
    model: str | None = Field(default=None, description="the model these requests need (a pool's model); default: "
                              "any pool")
    shared_prefix: SharedPrefix | None = None

    @model_validator(mode="after")
    def _feasible(self) -> OpenLoopWorkload:
        arrival = self.arrival
        if self.num_requests is None:  # duration_s ends it: the arrivals in that time must be countable
            expected = arrival.expected_arrivals(self.duration_s)
            if expected > MAX_REQUESTS:
                raise ValueError(f"duration_s: {self.duration_s:g} s at up to {arrival.peak_rate_per_s:g} requests/s "
                                 f"is about {expected:.3g} requests; at most {MAX_REQUESTS:,} per run (lower the rate "
                                 "or duration_s, or set num_requests)")
        elif self.duration_s is None and arrival.ends_s is not None:
            expected = arrival.expected_arrivals(arrival.ends_s)
            if expected < self.num_requests:
                raise ValueError(f"num_requests: the rate is 0 from {arrival.ends_s:g} s on (the last of "
                                 f"rates_per_s, without period_s), so only about {expected:.0f} of {self.num_requests} "
                                 "requests would arrive; give period_s, a last rate above 0, or fewer num_requests")
        return self


class ClosedLoopWorkload(_BoundedWorkload):
    """``clients`` users, each sending its next request ``think_time_s`` after the last one finished.

    With ``ramp_up_s`` the clients start evenly spread: client ``i`` sends its first request at
    ``i x ramp_up_s / clients`` (default 0: all at once, as ``vllm bench serve --max-concurrency`` does).
    """

    type: Literal["closed_loop"] = "closed_loop"
    clients: int = Field(gt=0, le=MAX_CLIENTS)
    think_time_s: float = Field(default=0.0, ge=0)
    ramp_up_s: float = Field(default=0.0, ge=0)
    prompt_tokens: LengthDist
    output_tokens: LengthDist
    model: str | None = Field(default=None, description="the model these requests need (a pool's model); default: "
                              "any pool")
    shared_prefix: SharedPrefix | None = None


class TraceColumns(BaseModel):
    """Which columns of a generic CSV or Parquet trace hold what."""

    model_config = _FROZEN
    arrival: str
    prompt_tokens: str
    output_tokens: str


class TraceWorkload(BaseModel):
    """Replay a request trace file (``format``: azure 2023 and 2024, mooncake JSONL, burstgpt CSV, or a generic
    csv / parquet with ``columns`` and ``time_unit``).

    ``time_scale`` multiplies inter-arrival times (0.5 replays twice as fast); ``start_s`` and
    ``duration_s`` take a window of the trace (in trace time); ``num_requests`` keeps the first N.
    ``spread_s`` moves each arrival uniformly within ``[t, t + spread_s)`` (Mooncake's 3-s buckets);
    ``rate_scale`` multiplies the traffic (thinning below 1, superposed shifted copies above).
    """

    model_config = _FROZEN
    type: Literal["trace"] = "trace"
    path: str
    format: Literal["azure", "mooncake", "burstgpt", "csv", "parquet"] = "azure"
    columns: TraceColumns | None = Field(default=None, description="csv and parquet: the column names")
    time_unit: Literal["s", "ms", "us", "ns"] = Field(default="s", description="csv and parquet: of the arrivals")
    spread_s: float = Field(default=0.0, ge=0)
    rate_scale: float = Field(default=1.0, gt=0, le=1000)
    prefix_block_tokens: int = Field(default=512, gt=0, description="tokens per prefix id (Mooncake: 512)")
    time_scale: float = Field(default=1.0, gt=0)
    start_s: float = Field(default=0.0, ge=0)
    duration_s: float | None = Field(default=None, gt=0)
    num_requests: int | None = Field(default=None, gt=0)
    model: str | None = Field(default=None, description="the model these requests need (a pool's model); default: "
                              "any pool")

    @model_validator(mode="after")
    def _columns(self) -> TraceWorkload:
        return _check_columns(self)

    def reader_options(self) -> dict:
        if self.format in ("csv", "parquet"):
            return {"columns": self.columns.model_dump(), "time_unit": self.time_unit}
        return {}


def _check_columns(wl):
    """A generic csv or parquet trace names its columns; the other formats have fixed ones (and seconds)."""
    if wl.format in ("csv", "parquet") and wl.columns is None:
        raise ValueError(f"format {wl.format} needs columns: {{arrival, prompt_tokens, output_tokens}} (the "
                         "file's column names)")
    if wl.format not in ("csv", "parquet"):
        # A dumped-and-reloaded scenario holds columns: null and time_unit: s, which say nothing.
        given = [k for k, unset in (("columns", None), ("time_unit", "s")) if getattr(wl, k) != unset]
        if given:
            raise ValueError(f"{given[0]}: is for format csv or parquet; format {wl.format} has fixed columns and "
                             "units (remove it, or set format: csv)")
    return wl


class FittedWorkload(BaseModel):
    """Synthetic traffic fitted to a trace: each ``window_s`` window's rate and inter-arrival CV, replayed as Gamma
    renewal arrivals, with (prompt, output) pairs resampled from the trace. ``rate_scale`` multiplies the rates."""

    model_config = _FROZEN
    type: Literal["fitted"] = "fitted"
    path: str
    format: Literal["azure", "mooncake", "burstgpt", "csv", "parquet"] = "azure"
    columns: TraceColumns | None = None
    time_unit: Literal["s", "ms", "us", "ns"] = "s"
    window_s: float = Field(default=600.0, gt=0)
    rate_scale: float = Field(default=1.0, gt=0, le=1000)
    model: str | None = Field(default=None, description="the model these requests need (a pool's model)")

    @model_validator(mode="after")
    def _columns(self) -> FittedWorkload:
        return _check_columns(self)

    def reader_options(self) -> dict:
        if self.format in ("csv", "parquet"):
            return {"columns": self.columns.model_dump(), "time_unit": self.time_unit}
        return {}


class ServeGenWorkload(BaseModel):
    """Multi-client traffic from Alibaba ServeGen's per-client windows (``path``: a folder of
    ``chunk-<client>-trace.csv`` and ``-dataset.json``): every client a Gamma renewal source at its window's rate and
    CV, lengths from its PMFs, from ``start_s`` for ``duration_s``; ``rate_scale`` scales to the simulated fleet."""

    model_config = _FROZEN
    type: Literal["servegen"] = "servegen"
    path: str
    clients: tuple[str, ...] | None = Field(default=None, min_length=1, description="client ids; default: all in "
                                            "the folder")
    start_s: float = Field(default=0.0, ge=0)
    duration_s: float = Field(gt=0)
    rate_scale: float = Field(default=1.0, gt=0, le=1000)
    model: str | None = Field(default=None, description="the model these requests need (a pool's model)")


Workload = Annotated[OpenLoopWorkload | ClosedLoopWorkload | TraceWorkload | FittedWorkload | ServeGenWorkload,
                     Field(discriminator="type")]


class RouteRule(BaseModel):
    """Send requests that match every condition given to ``pools`` (hybrid fleets: by request shape or tenant).

    ``min_output_tokens`` reads the request's output length as a known hint (as a client's ``max_tokens`` or a
    length predictor would give it; the simulator knows it exactly)."""

    model_config = _FROZEN
    pools: tuple[str, ...] = Field(min_length=1)
    min_prompt_tokens: int | None = Field(default=None, ge=0)
    max_prompt_tokens: int | None = Field(default=None, ge=0)
    min_output_tokens: int | None = Field(default=None, ge=0)
    max_output_tokens: int | None = Field(default=None, ge=0)
    traffic_class: str | None = Field(default=None, alias="class", description="a traffic class name (tenant)")

    @model_validator(mode="after")
    def _ranges(self) -> RouteRule:
        for what in ("prompt", "output"):
            low, high = getattr(self, f"min_{what}_tokens"), getattr(self, f"max_{what}_tokens")
            if low is not None and high is not None and low > high:
                raise ValueError(f"max_{what}_tokens: {high} is below min_{what}_tokens {low}; the rule could never "
                                 "match")
        return self


class Overflow(BaseModel):
    """Burst overflow: a request bound for ``from`` goes to ``to`` when every ready replica of ``from`` has more than
    ``queue_above`` requests waiting."""

    model_config = _FROZEN
    from_pool: str = Field(alias="from")
    to: tuple[str, ...] = Field(min_length=1)
    queue_above: int = Field(ge=0)

    @model_validator(mode="after")
    def _elsewhere(self) -> Overflow:
        if self.from_pool in self.to:
            raise ValueError(f"to: names {self.from_pool!r}, the pool it overflows from; overflow goes to other pools")
        return self


class RouterConfig(BaseModel):
    """How a request finds a replica: the first of ``rules`` it matches chooses the pools (none matching: any pool),
    ``overflow`` may move it to other pools under a burst, and ``policy`` picks the replica among those pools."""

    model_config = _FROZEN
    policy: str = Field(default="least_outstanding", description="registry key")
    rules: tuple[RouteRule, ...] = ()
    overflow: tuple[Overflow, ...] = ()


class SloConfig(BaseModel):
    """Per-request latency objectives; a finished request attains the SLO when it meets every one given."""

    model_config = _FROZEN
    ttft_s: float | None = Field(default=None, gt=0)
    tpot_s: float | None = Field(default=None, gt=0)
    e2e_s: float | None = Field(default=None, gt=0)


class TrafficClass(BaseModel):
    """A further class of traffic beside ``workload`` (which is the class ``default``): its own arrivals and
    lengths, the model it needs (``workload.model``) and its own SLO (default: the scenario's)."""

    model_config = _FROZEN
    name: str = Field(min_length=1)
    workload: Workload
    slo: SloConfig | None = None
    priority: int = Field(default=0, description="with engine.scheduling_policy: priority, lower values are "
                          "admitted first (as vLLM); the default class has priority 0")


class KvTransferConfig(BaseModel):
    """How a disaggregated fleet moves a prompt's KV cache from a prefill replica to a decode replica: each prefill
    replica sends over one link of ``bandwidth_gb_s`` (GB/s, 1e9 bytes), one transfer at a time in FIFO order
    (a later hand-off waits for the link), plus ``latency_s`` per transfer. Typical links: NVLink within a node
    (H100: 450 GB/s per GPU), InfiniBand NDR or 400 GbE between nodes (50 GB/s per NIC), 100 GbE (12.5 GB/s)."""

    model_config = _FROZEN
    bandwidth_gb_s: float = Field(gt=0)
    latency_s: float = Field(default=0.0, ge=0)


class AlertRule(BaseModel):
    """Fire when ``metric`` (of ``pool``, default the whole fleet) is above ``above`` and/or below ``below`` at every
    sample for ``for_s`` seconds (Prometheus ``for:``)."""

    model_config = _FROZEN
    name: str = Field(min_length=1)
    metric: Literal["gpu_utilisation", "queue_depth", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "cost_per_request_usd"]
    above: float | None = None
    below: float | None = None
    for_s: float = Field(default=0.0, ge=0)
    pool: str | None = Field(default=None, description="default: the whole fleet ('all')")

    @model_validator(mode="after")
    def _threshold(self) -> AlertRule:
        if self.above is None and self.below is None:
            raise ValueError(f"alert {self.name!r}: give above and/or below")
        if self.above is not None and self.below is not None and self.above >= self.below:
            raise ValueError(f"below: alert {self.name!r} fires while the value is above {self.above:g} and below "
                             f"{self.below:g} at once, which never happens; give above < below (a band), or one of "
                             "them")
        return self


#: The thresholds operators run by (issue #9): GPU utilisation kept within 60-80%, more than 10 requests pending,
#: p99 latency above 500 ms.
DEFAULT_ALERTS = (
    AlertRule(name="gpu_utilisation_low", metric="gpu_utilisation", below=0.6, for_s=300),
    AlertRule(name="gpu_utilisation_high", metric="gpu_utilisation", above=0.8, for_s=300),
    AlertRule(name="queue_depth_high", metric="queue_depth", above=10, for_s=60),
    AlertRule(name="ttft_p99_high", metric="ttft_p99_s", above=0.5, for_s=60),
)


class MonitoringConfig(BaseModel):
    """Metrics sampled every ``interval_s`` per pool and for the fleet (``monitoring.parquet``), and ``alerts`` over
    them (``alerts.parquet``); latency percentiles over the last ``latency_window_s``."""

    model_config = _FROZEN
    interval_s: float = Field(default=15.0, ge=0.1, description="seconds between samples (at least 0.1: a scrape "
                              "interval, not a per-step trace; a finer one only multiplies the rows)")
    latency_window_s: float = Field(default=60.0, gt=0)
    alerts: tuple[AlertRule, ...] = DEFAULT_ALERTS

    @model_validator(mode="after")
    def _unique(self) -> MonitoringConfig:
        names = [a.name for a in self.alerts]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"alerts.{i}.name: {name!r} is the name of alert {names.index(name)} too; alert "
                                 "names must be unique (each names a column of the alerts table)")
        return self


class MaintenanceWindow(BaseModel):
    """Host ``host`` of ``pool`` is under maintenance from ``start_s`` for ``duration_s``. A host is one of the pool's
    nodes (``nodes.gpus_per_node`` GPUs; by default a replica's GPUs) or, for a pool on shared GPUs (vGPU, MIG,
    time-slicing, MPS), one physical GPU (its index among the GPUs holding the pool's replicas)."""

    model_config = _FROZEN
    pool: str
    host: int = Field(default=0, ge=0)
    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)


class RollingMaintenance(BaseModel):
    """Every host of ``pools`` in turn, one at a time: each for ``duration_s``, the next ``gap_s`` after the last
    ended, from ``start_s``."""

    model_config = _FROZEN
    pools: tuple[str, ...] = Field(min_length=1)
    start_s: float = Field(default=0.0, ge=0)
    duration_s: float = Field(gt=0)
    gap_s: float = Field(default=0.0, ge=0)


class MaintenanceConfig(BaseModel):
    """Host maintenance (issue #9). Replicas on whole GPUs, bare metal or passed through to a VM, cannot be live-
    migrated: they stop at the window's start (their requests are routed again and restart) and start again at its
    end, taking ``restart_s`` to boot and load. vGPU and MIG VMs are live-migrated to a host with a matching driver:
    each is stunned (paused) once, at its next step boundary, for ``switchover_s`` plus its GPU state (the frame
    buffer in use: weights and the KV blocks in use) over ``migration_gb_s``; nothing is lost, its requests wait."""

    model_config = _FROZEN
    windows: tuple[MaintenanceWindow, ...] = ()
    rolling: RollingMaintenance | None = None
    restart_s: float = Field(default=120.0, ge=0, description="boot and load after a passthrough host's window")
    migration_gb_s: float = Field(default=10.0, gt=0, description="GPU state copy rate of a live migration")
    switchover_s: float = Field(default=0.2, ge=0, description="fixed stun of a live migration")


class RunConfig(BaseModel):
    model_config = _FROZEN
    max_duration_s: float | None = Field(
        default=None, gt=0, description="stop the clock here; unfinished requests are reported in flight"
    )
    trace_events: bool = Field(default=False, description="keep the per-request event log (for debugging)")
    spill_after_requests: int | None = Field(
        default=1_000_000, gt=0, description="past this many request records, write them to Parquet parts and "
        "keep only the summary's columns in memory (None: never)")
    check_invariants: bool = Field(default=True, description="check the run's invariants at its end "
                                   "(sim/invariants.py); off only for benchmarks")
    spill_dir: str | None = Field(default=None, description="folder for spilled records; default: a temporary "
                                  "folder (the CLI uses --out)")
    core: Literal["auto", "python"] = Field(
        default="auto", description="auto: the compiled engine core where the scenario allows it (the same "
        "results, faster; the summary's engine block says which ran and why); python: always the Python engine")


class Scenario(BaseModel):
    """A whole scenario: what arrives, the fleet that serves it, and how results are judged."""

    model_config = _FROZEN
    name: str = "scenario"
    seed: int = Field(default=0, ge=0)
    catalog_files: tuple[str, ...] = ()
    workload: Workload
    pools: dict[str, PoolConfig] = Field(min_length=1)
    router: RouterConfig = RouterConfig()
    slo: SloConfig = SloConfig()
    run: RunConfig = RunConfig()
    fleet_autoscale: FleetAutoscaleConfig | None = Field(default=None, description="one autoscaler across pools")
    classes: tuple[TrafficClass, ...] = Field(default=(), description="more traffic classes beside workload")
    kv_transfer: KvTransferConfig | None = Field(default=None, description="disaggregated serving: the KV hand-off "
                                                 "from prefill to decode pools (needed when a pool has role prefill)")
    monitoring: MonitoringConfig | None = Field(default=None, description="sampled metrics and alert rules")
    maintenance: MaintenanceConfig | None = Field(default=None, description="host maintenance windows")

    @model_validator(mode="after")
    def _pool_names(self) -> Scenario:
        if "all" in self.pools:  # tables and monitoring name the whole fleet "all"
            raise ValueError("pools.all: 'all' is reserved for the whole fleet in summaries, tables and alerts; give "
                             "the pool another name")
        return self

    @model_validator(mode="after")
    def _maintenance_pools(self) -> Scenario:
        m = self.maintenance
        if m is None:
            return self
        named = [(f"maintenance.windows.{i}.pool", w.pool) for i, w in enumerate(m.windows)]
        named += [(f"maintenance.rolling.pools.{i}", p) for i, p in enumerate(m.rolling.pools if m.rolling else ())]
        for where, pool in named:
            if pool not in self.pools:
                raise ValueError(f"{where}: {pool!r} is not a pool of this scenario ({', '.join(self.pools)})")
        return self

    @model_validator(mode="after")
    def _router_pools(self) -> Scenario:
        classes = {name for name, _, _ in self.traffic()}
        named = [(f"router.rules.{i}", r.pools) for i, r in enumerate(self.router.rules)]
        named += [(f"router.overflow.{i}", (o.from_pool, *o.to)) for i, o in enumerate(self.router.overflow)]
        for where, pools in named:
            unknown = [p for p in pools if p not in self.pools]
            if unknown:
                raise ValueError(f"{where}: {unknown} not pools of this scenario ({', '.join(self.pools)})")
        for i, rule in enumerate(self.router.rules):
            if rule.traffic_class is not None and rule.traffic_class not in classes:
                raise ValueError(f"router.rules.{i}.class: {rule.traffic_class!r} is not a traffic class "
                                 f"({', '.join(sorted(classes))})")
        return self

    @model_validator(mode="after")
    def _alert_pools(self) -> Scenario:
        for i, rule in enumerate(self.monitoring.alerts if self.monitoring else ()):
            if rule.pool is not None and rule.pool not in self.pools:
                raise ValueError(f"monitoring.alerts.{i}.pool: alert {rule.name!r}: {rule.pool!r} is not a pool of "
                                 f"this scenario ({', '.join(self.pools)})")
        return self

    @model_validator(mode="after")
    def _disaggregation(self) -> Scenario:
        roles = {name: pool.role for name, pool in self.pools.items()}
        if set(roles.values()) == {"both"}:
            if self.kv_transfer is not None:
                raise ValueError("kv_transfer: is for disaggregated serving, but no pool has role prefill or decode; "
                                 "remove it, or give pools role prefill and decode")
            return self
        whole = sorted(n for n, r in roles.items() if r == "both")
        if whole:
            raise ValueError(f"pools.{whole[0]}.role: pools {whole} have role both in a disaggregated fleet; every "
                             "pool must be role prefill or decode")
        for model in sorted({pool.model for pool in self.pools.values()}):
            have = {pool.role for pool in self.pools.values() if pool.model == model}
            if have != {"prefill", "decode"}:
                missing = ({"prefill", "decode"} - have).pop()
                raise ValueError(f"pools: model {model} has no pool of role {missing}: a disaggregated model needs "
                                 "both a prefill and a decode pool")
        if self.kv_transfer is None:
            raise ValueError("kv_transfer: a kv_transfer block (bandwidth_gb_s, latency_s) is needed when pools have "
                             "role prefill/decode")
        return self

    @model_validator(mode="after")
    def _class_names(self) -> Scenario:
        names = [c.name for c in self.classes]
        for i, name in enumerate(names):
            if name == "default" or name in names[:i]:
                raise ValueError(f"classes.{i}.name: class names must be unique and not 'default' (the workload's "
                                 f"class); got {names}")
        return self

    def traffic(self) -> list[tuple[str, Workload, SloConfig]]:
        """Every class of traffic: ``(name, workload, slo)``, the ``default`` class (``workload``) first."""
        return [("default", self.workload, self.slo), *((c.name, c.workload, c.slo or self.slo) for c in self.classes)]

    def priorities(self) -> list[int]:
        """Each class's priority, in :meth:`traffic` order."""
        return [0, *(c.priority for c in self.classes)]

"""Resolve each pool of a scenario against the catalog: GPU, model, price and memory plan.

This is where impossible deployments are caught, at load time, with the pool field to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sim.catalog import Catalog, GpuSpec, ModelSpec, Price, model_from_hf_config
from sim.config import PoolConfig, Scenario
from sim.engine.scheduler import SCHEDULERS
from sim.engine.sizing import ReplicaSizing, SizingError, size_replica
from sim.errors import CatalogError, DeploymentError, ScenarioError, unknown_name
from sim.sharing import mig, vgpu
from sim.sharing.mig import PlacementError
from sim.sharing.placement import SHARED_MODES, PhysicalGpu, Tenant, pack, tenant_rules
from sim.sharing.slicing import sm_share


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """A pool with its references resolved (``gpu`` is what each replica runs on: a MIG instance, a vGPU VM's
    view of the GPU, or the whole GPU)."""

    name: str
    config: PoolConfig
    gpu: GpuSpec
    model: ModelSpec
    sizing: ReplicaSizing
    usd_per_gpu_hour: float
    price_label: str
    draft_model: ModelSpec | None = None  # speculative decoding's draft model, if it has one

    @property
    def shared(self) -> bool:
        """Whether the pool's replicas share physical GPUs (see :mod:`sim.sharing.placement`)."""
        return self.config.sharing is not None and self.config.sharing.mode in SHARED_MODES


@dataclass(frozen=True, slots=True)
class Deployment:
    """Every pool's plan, and the physical GPUs that the shared pools' replicas are placed on."""

    pools: dict[str, PoolPlan]
    gpus: tuple[PhysicalGpu, ...]

    def placement(self) -> dict[tuple[str, int], tuple[PhysicalGpu, int]]:
        """``(pool, replica index in the pool) -> (physical GPU, position on it)`` for shared pools' replicas."""
        return {(t.pool, t.index): (g, i) for g in self.gpus for i, t in enumerate(g.tenants)}

    def gpus_of(self, pool: str) -> list[PhysicalGpu]:
        return [g for g in self.gpus if any(t.pool == pool for t in g.tenants)]


def _replica_gpu(pool: PoolConfig, gpu: GpuSpec, source: str, base: str) -> GpuSpec:
    """What one replica of a shared pool runs on (its MIG instance, VM or client share of ``gpu``)."""
    sharing = pool.sharing
    field = "profile" if sharing.mode in ("mig", "vgpu") else "mode"
    try:
        if sharing.mode == "mig":
            spec = mig.instance_spec(gpu, sharing.profile)
        elif sharing.mode == "vgpu":
            spec = vgpu.vm_spec(gpu, sharing.profile)
            if sharing.mixed_sizes and sharing.scheduler == "fixed_share":
                field = "scheduler"
                raise PlacementError("fixed share is not supported in mixed-size mode (Table 3.1); use best_effort "
                                     "or equal_share, or mixed_sizes: false")
        else:
            fraction = sharing.memory_fraction or 1 / sharing.replicas_per_gpu
            # Alone, a pool must fit replicas_per_gpu of its replicas on a GPU; in a group, pack() checks the mix.
            if sharing.group is None and fraction * sharing.replicas_per_gpu > 1 + 1e-9:
                field = "memory_fraction"
                raise PlacementError(f"{sharing.replicas_per_gpu} replicas per GPU x memory_fraction {fraction:g} add "
                                     f"up to more than 1 ({'SH-1' if sharing.mode == 'timeslice' else 'SH-2'}: "
                                     "the engines on one GPU would run out of memory); allowed: at most "
                                     f"{1 / sharing.replicas_per_gpu:.4g}")
            update = {"name": f"{gpu.name} ({sharing.mode} client)", "memory_gib": gpu.memory_gib * fraction,
                      "mig_memory_slices": 0, "mig_profiles": {}, "vgpu_profiles": {}}
            if sharing.mode == "mps":
                sm = sm_share(sharing)
                update |= {k: getattr(gpu, k) * sm for k in ("bf16_tflops", "fp8_tflops", "int8_tops")
                           if getattr(gpu, k) is not None}
                update["memory_bandwidth_gb_s"] = gpu.memory_bandwidth_gb_s * sm
            spec = gpu.model_copy(update=update)
    except PlacementError as err:
        raise ScenarioError(source, f"{base}.sharing.{field}", str(err)) from None
    if pool.gpus_per_replica != 1:
        field = "tensor_parallel" if pool.tensor_parallel != 1 else "pipeline_parallel"
        raise ScenarioError(source, f"{base}.{field}", f"{getattr(pool, field)} with {sharing.mode}: each "
                            f"replica runs on one share of a GPU, so {field} must be 1 (use a larger share, "
                            "or whole GPUs)")
    return spec


#: Settings that every pool of one sharing group must agree on (they belong to the physical GPU).
_GROUP_FIELDS = ("mode", "scheduler", "time_slice_ms", "switch_cost_us", "fidelity", "mixed_sizes",
                 "license_usd_per_gpu_hour", "replicas_per_gpu")


def _place(scenario: Scenario, catalog: Catalog, source: str) -> tuple[PhysicalGpu, ...]:
    """Pack the shared pools' replicas onto physical GPUs, group by group."""
    groups: dict[str, list[str]] = {}
    for name, pool in scenario.pools.items():
        if pool.sharing is not None and pool.sharing.mode in SHARED_MODES:
            groups.setdefault(pool.sharing.group or name, []).append(name)
    gpus: list[PhysicalGpu] = []
    for group, names in groups.items():
        first = scenario.pools[names[0]]
        owner = scenario.pools.get(group)
        if owner is not None and getattr(owner.sharing, "group", None) != group and len(names) > 1:
            raise ScenarioError(source, f"pools.{names[-1]}.sharing.group", f"'{group}' is also the name of a pool "
                                "outside this group; pick a group name that is not a pool name")
        for other in names[1:]:
            pool, base = scenario.pools[other], f"pools.{other}"
            if pool.gpu != first.gpu:
                raise ScenarioError(source, f"{base}.gpu", f"{pool.gpu}, but pool {names[0]} of sharing group "
                                    f"'{group}' is on {first.gpu}: pools sharing GPUs must name the same GPU")
            for field in _GROUP_FIELDS:
                mine, theirs = getattr(pool.sharing, field, None), getattr(first.sharing, field, None)
                if mine != theirs:
                    raise ScenarioError(source, f"{base}.sharing.{field}", f"{mine!r}, but pool {names[0]} of "
                                        f"sharing group '{group}' has {theirs!r}: it is a setting of the shared GPUs")
        gpu = catalog.gpus[first.gpu]
        tenants, check = [], None
        for name in names:
            pool = scenario.pools[name]
            rule, weight, prof = tenant_rules(pool.sharing.mode, gpu, pool.sharing)
            check = check or rule
            tenants += [Tenant(name, i, prof, weight) for i in range(pool.replicas)]
            sizes = {t.weight for t in tenants}
            if first.sharing.mode == "vgpu" and len(sizes) > 1 and not first.sharing.mixed_sizes:
                raise ScenarioError(source, f"pools.{name}.sharing.profile", f"{pool.sharing.profile} differs in "
                                    f"frame-buffer size from the other profiles of sharing group '{group}'; in "
                                    "equal-size mode every vGPU on a GPU has the same size (VG-9; set mixed_sizes: "
                                    "true, or use separate groups)")
        # First-fit decreasing: the largest shares first, so that small ones fill the gaps (a MIG 1g.10gb placed
        # before a 4g.40gb would take the slot the 4g needs).
        tenants.sort(key=lambda t: -t.weight)
        try:
            gpus += pack(group, gpu, first.sharing.mode, tenants, check)
        except PlacementError as err:
            raise ScenarioError(source, f"pools.{names[0]}.sharing", str(err)) from None
    return tuple(gpus)


def _model(pool: PoolConfig, catalog: Catalog, source: str, field: str) -> ModelSpec:
    if pool.model.endswith(".json"):
        if not Path(pool.model).is_file():
            raise ScenarioError(source, field, f"model config file not found: {pool.model}")
        try:
            return model_from_hf_config(pool.model)
        except CatalogError as err:
            raise ScenarioError(source, field, str(err)) from None
    if pool.model not in catalog.models:
        raise ScenarioError(source, field, unknown_name("model", pool.model, catalog.models)
                            + " (or a path to a Hugging Face config.json)")
    return catalog.models[pool.model]


def _price(pool: PoolConfig, catalog: Catalog, source: str, field: str) -> tuple[float, str]:
    cfg = pool.price
    if cfg.usd_per_gpu_hour is not None:
        return cfg.usd_per_gpu_hour, "scenario"
    prices = catalog.prices_for(pool.gpu)
    if cfg.provider is None and cfg.instance is None and cfg.tier == "on_demand":
        chosen = [p for p in prices if p.default]
    else:
        chosen = [
            p for p in prices
            if (cfg.provider is None or p.provider == cfg.provider)
            and p.tier == cfg.tier
            and (cfg.instance is None or p.instance == cfg.instance)
        ]
    if not chosen:
        offered = sorted({f"{p.provider}/{p.tier}" + (f"/{p.instance}" if p.instance else "") for p in prices})
        raise ScenarioError(source, field, f"no catalog price for {pool.gpu} with provider={cfg.provider}, "
                            f"tier={cfg.tier}, instance={cfg.instance}; the catalog has: "
                            f"{', '.join(offered) or 'none'}; or set price.usd_per_gpu_hour")
    price: Price = chosen[0]
    label = f"{price.provider}/{price.tier}" + (f"/{price.instance}" if price.instance else "")
    return price.usd_per_gpu_hour, label


def plan_pools(scenario: Scenario, catalog: Catalog, source: str) -> Deployment:
    """Resolve every pool and place shared replicas on physical GPUs; raise :class:`ScenarioError` naming
    ``pools.NAME.FIELD`` on a bad reference or an impossible deployment."""
    plans = {}
    for name, pool in scenario.pools.items():
        base = f"pools.{name}"
        if pool.gpu not in catalog.gpus:
            raise ScenarioError(source, f"{base}.gpu", unknown_name("GPU", pool.gpu, catalog.gpus))
        if pool.engine.scheduler not in SCHEDULERS:
            raise ScenarioError(source, f"{base}.engine.scheduler",
                                unknown_name("scheduler", pool.engine.scheduler, SCHEDULERS))
        gpu = catalog.gpus[pool.gpu]
        if pool.sharing is not None and pool.sharing.mode in SHARED_MODES:
            gpu = _replica_gpu(pool, gpu, source, base)
        model = _model(pool, catalog, source, f"{base}.model")
        usd, label = _price(pool, catalog, source, f"{base}.price")
        try:
            sizing = size_replica(gpu, model, pool)
        except SizingError as err:
            raise DeploymentError(source, f"{base}.{err.field}", str(err)) from None
        draft = None
        spec = pool.engine.speculative
        if spec is not None and spec.draft_model is not None:
            if spec.draft_model not in catalog.models:
                raise ScenarioError(source, f"{base}.engine.speculative.draft_model",
                                    unknown_name("model", spec.draft_model, catalog.models))
            draft = catalog.models[spec.draft_model]
            if draft.n_params >= model.n_params:
                raise ScenarioError(source, f"{base}.engine.speculative.draft_model",
                                    f"{draft.name} ({draft.n_params / 1e9:.1f}B parameters) is not smaller than the "
                                    f"model it drafts for, {model.name} ({model.n_params / 1e9:.1f}B); a draft model "
                                    "must be smaller to save time")
        plans[name] = PoolPlan(name, pool, gpu, model, sizing, usd, label, draft)
    if sum(p.replicas for p in scenario.pools.values()) == 0 and scenario.fleet_autoscale is None and all(
            p.autoscale is None for p in scenario.pools.values()):
        raise ScenarioError(source, "pools", "every pool has 0 replicas and none autoscales; at least one replica is "
                            "needed")
    return Deployment(plans, _place(scenario, catalog, source))

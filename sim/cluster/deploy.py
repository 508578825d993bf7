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
from sim.sharing import mig


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """A pool with its references resolved."""

    name: str
    config: PoolConfig
    gpu: GpuSpec
    model: ModelSpec
    sizing: ReplicaSizing
    usd_per_gpu_hour: float
    price_label: str
    replicas_per_gpu: int = 1  # MIG instances per physical GPU

    @property
    def physical_gpus(self) -> int:
        """GPUs the pool occupies (and pays for): a GPU shared by MIG instances counts once, even part used."""
        if self.replicas_per_gpu > 1:
            return -(-self.config.replicas // self.replicas_per_gpu)
        return self.config.replicas * self.config.tensor_parallel

    @property
    def gpus_per_replica(self) -> float:
        """Each replica's share of the pool's GPUs (cost and energy are split evenly across MIG instances)."""
        if self.replicas_per_gpu > 1:
            return self.physical_gpus / self.config.replicas if self.config.replicas else 1 / self.replicas_per_gpu
        return self.config.tensor_parallel


def _mig(pool: PoolConfig, gpu: GpuSpec, source: str, base: str) -> tuple[GpuSpec, int]:
    """The MIG instance each replica gets, and how many fit on one GPU (reference section 4)."""
    name = pool.sharing.profile
    try:
        prof = mig.profile(gpu, name)
    except mig.PlacementError as err:
        raise ScenarioError(source, f"{base}.sharing.profile", str(err)) from None
    if pool.tensor_parallel != 1:
        raise ScenarioError(source, f"{base}.tensor_parallel", f"{pool.tensor_parallel} with MIG: each replica runs "
                            "on one MIG instance, so tensor_parallel must be 1 (pick a larger profile instead)")
    per_gpu = next(k for k in range(prof.max_instances, 0, -1) if _fits(gpu, name, k))
    return mig.instance_spec(gpu, name), per_gpu


def _fits(gpu: GpuSpec, name: str, count: int) -> bool:
    try:
        mig.first_fit(gpu, [name] * count)
    except mig.PlacementError:
        return False
    return True


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


def plan_pools(scenario: Scenario, catalog: Catalog, source: str) -> dict[str, PoolPlan]:
    """Resolve every pool; raise :class:`ScenarioError` naming ``pools.NAME.FIELD`` on a bad reference."""
    plans = {}
    for name, pool in scenario.pools.items():
        base = f"pools.{name}"
        if pool.gpu not in catalog.gpus:
            raise ScenarioError(source, f"{base}.gpu", unknown_name("GPU", pool.gpu, catalog.gpus))
        if pool.engine.scheduler not in SCHEDULERS:
            raise ScenarioError(source, f"{base}.engine.scheduler",
                                unknown_name("scheduler", pool.engine.scheduler, SCHEDULERS))
        gpu = catalog.gpus[pool.gpu]
        per_gpu = 1
        if pool.sharing is not None and pool.sharing.mode == "mig":
            gpu, per_gpu = _mig(pool, gpu, source, base)
        model = _model(pool, catalog, source, f"{base}.model")
        usd, label = _price(pool, catalog, source, f"{base}.price")
        try:
            sizing = size_replica(gpu, model, pool)
        except SizingError as err:
            raise DeploymentError(source, f"{base}.{err.field}", str(err)) from None
        plans[name] = PoolPlan(name, pool, gpu, model, sizing, usd, label, per_gpu)
    if sum(p.replicas for p in scenario.pools.values()) == 0:
        raise ScenarioError(source, "pools", "every pool has 0 replicas; at least one replica is needed")
    return plans

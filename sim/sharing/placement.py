"""The physical-GPU layer: which replicas share which GPU, and each one's part of that GPU.

Pools with a sharing mode other than passthrough put their replicas (VMs, MIG instances, time-slicing or MPS
clients) on physical GPUs. Pools that name the same ``sharing.group`` share GPUs (different models or tenants on
one GPU); otherwise a pool has GPUs of its own. Replicas are packed first-fit, in pool order, each onto the first
GPU where the mode's rules still hold. A GPU's hourly cost is split across its tenants in proportion to their
``weight`` (frame buffer for vGPU, memory slices for MIG, memory fraction for time-slicing and MPS), so a GPU that
is not full is still paid whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sim.catalog import GpuSpec
from sim.sharing import mig, vgpu
from sim.sharing.mig import PlacementError

#: Modes whose replicas share physical GPUs (passthrough gives each replica whole GPUs).
SHARED_MODES = ("vgpu", "mig", "timeslice", "mps")


@dataclass(frozen=True, slots=True)
class Tenant:
    """One replica on a physical GPU: its pool, its index in the pool, its profile (if any) and cost weight."""

    pool: str
    index: int
    profile: str | None
    weight: float


@dataclass(frozen=True, slots=True)
class PhysicalGpu:
    """One physical GPU and the replicas on it (in placement order: a tenant's position is its slot)."""

    gpu_id: str
    gpu: GpuSpec
    mode: str
    tenants: tuple[Tenant, ...]

    def share(self, position: int) -> float:
        """Tenant ``position``'s part of the GPU's cost and energy."""
        return self.tenants[position].weight / sum(t.weight for t in self.tenants)


def tenant_rules(mode: str, gpu: GpuSpec, sharing) -> tuple[Callable[[Sequence[Tenant]], None], float, str | None]:
    """For one pool: the rule that a GPU's tenants must satisfy, this pool's tenant weight, and its profile."""
    if mode == "vgpu":
        return (lambda ts: vgpu.check_placement(gpu, [t.profile for t in ts], sharing.mixed_sizes),
                vgpu.profile(gpu, sharing.profile).memory_gib, sharing.profile)
    if mode == "mig":
        return (lambda ts: mig.layout(gpu, [t.profile for t in ts]),
                float(mig.profile(gpu, sharing.profile).memory_slices), sharing.profile)
    fraction = sharing.memory_fraction or 1 / sharing.replicas_per_gpu
    rule = "SH-1, no memory isolation" if mode == "timeslice" else "SH-2, pinned memory limits"

    def check(ts: Sequence[Tenant]) -> None:
        if len(ts) > sharing.replicas_per_gpu:
            raise PlacementError(f"{len(ts)} replicas on one GPU; replicas_per_gpu is {sharing.replicas_per_gpu}")
        if sum(t.weight for t in ts) > 1 + 1e-9:
            raise PlacementError(f"memory fractions {', '.join(f'{t.weight:g}' for t in ts)} on one GPU add up to "
                                 f"more than 1 ({rule}: the engines would run out of memory)")

    return check, fraction, None


def pack(group: str, gpu: GpuSpec, mode: str, tenants: Sequence[Tenant],
         check: Callable[[Sequence[Tenant]], None]) -> list[PhysicalGpu]:
    """Place ``tenants`` first-fit on as many GPUs as needed; :class:`PlacementError` if one fits on no GPU."""
    gpus: list[list[Tenant]] = []
    for tenant in tenants:
        for on in gpus:
            try:
                check([*on, tenant])
            except PlacementError:
                continue
            on.append(tenant)
            break
        else:
            check([tenant])  # alone on a GPU: an error here is the tenant's own
            gpus.append([tenant])
    return [PhysicalGpu(f"{group}/{i}", gpu, mode, tuple(on)) for i, on in enumerate(gpus)]

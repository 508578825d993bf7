"""MIG (Multi-Instance GPU): which GPU instances fit on one GPU, and what each instance is as a GPU.

The rules follow ``../shared/reference/gpu-sharing-autoscaling-cost.md`` section 4:

- MIG-1: only GPUs whose catalog entry lists MIG profiles support MIG (H100 yes; L4, L40S, T4 no).
- MIG-2: the GPU has ``mig_memory_slices`` memory slices (8 on an H100 80 GB); a GPU instance owns a contiguous
  range of them, starting at one of its profile's allowed starts.
- MIG-3: a set of instances is valid if each sits at an allowed start of its profile, no two memory ranges
  overlap, and no profile exceeds its maximum count (the allowed starts encode the compute-slice limits).
- MIG-4: an instance runs concurrently with the others, isolated: it has its profile's SMs and about
  (memory slices / slices per GPU) of the HBM bandwidth, and its profile's memory.

Pure functions over catalog entries; the scenario layer turns their :class:`PlacementError` into an error that
names the file and field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sim.catalog import GpuSpec, MigProfile
from sim.errors import unknown_name


class PlacementError(ValueError):
    """An impossible MIG request; the message names the rule (MIG-1 to MIG-3) it breaks."""


def profile(gpu: GpuSpec, name: str) -> MigProfile:
    """The MIG profile ``name`` of ``gpu`` (MIG-1: a GPU without profiles does not support MIG)."""
    if not gpu.mig_profiles:
        if any(family in gpu.name for family in ("A100", "A30", "H100", "H200", "B200")):  # MIG-1's, no table here
            raise PlacementError(f"{gpu.name}: the catalog has no MIG profiles for this GPU (MIG-1 lists it as "
                                 "MIG-capable; add its mig_profiles and mig_memory_slices in a catalog file, or use "
                                 "h100_sxm, whose Table 4.1 profiles ship)")
        raise PlacementError(f"{gpu.name} does not support MIG (MIG-1: MIG needs A100, A30, H100, H200 or newer "
                             "data-centre GPUs; share it by time-slicing instead)")
    try:
        return gpu.mig_profiles[name]
    except KeyError:
        raise PlacementError(f"{gpu.name}: {unknown_name('MIG profile', name, sorted(gpu.mig_profiles))}") from None


def check_placement(gpu: GpuSpec, placement: Sequence[tuple[str, int]]) -> None:
    """Raise :class:`PlacementError` unless ``placement`` ((profile, memory-slot start) per instance) is a valid
    MIG layout of one ``gpu`` (MIG-1 to MIG-3)."""
    used: list[tuple[int, int, str]] = []
    for name, start in placement:
        prof = profile(gpu, name)
        if start not in prof.starts:
            raise PlacementError(f"{gpu.name}: {name} cannot start at memory slot {start} (MIG-3: allowed starts "
                                 f"{list(prof.starts)})")
        end = start + prof.memory_slices
        for other_start, other_end, other in used:
            if start < other_end and other_start < end:
                raise PlacementError(f"{gpu.name}: {name}@{start} overlaps {other}@{other_start} (MIG-3: memory "
                                     f"slots {start}-{end - 1} and {other_start}-{other_end - 1})")
        used.append((start, end, name))
    for name, count in Counter(name for name, _ in placement).items():
        if count > gpu.mig_profiles[name].max_instances:
            raise PlacementError(f"{gpu.name}: {count} x {name} (MIG-3: at most "
                                 f"{gpu.mig_profiles[name].max_instances} per GPU)")


def layout(gpu: GpuSpec, names: Sequence[str]) -> list[tuple[str, int]]:
    """Place instances of the profiles ``names`` on one GPU: (profile, memory-slot start) per instance, in the order
    given, for a valid layout (MIG-3) if one exists.

    A depth-first search: the largest instances first, each at its allowed starts in turn, instances of one profile
    at increasing starts (so the search never tries the same layout twice). The lowest free start alone is not
    enough: 3g + 2g + 2g fits an H100 only as 2g@0, 2g@2, 3g@4. Raises :class:`PlacementError` if no layout holds
    them (the message says why).
    """
    profiles = [profile(gpu, name) for name in names]
    for name, count in Counter(names).items():
        if count > gpu.mig_profiles[name].max_instances:
            raise PlacementError(f"{gpu.name}: {count} x {name} (MIG-3: at most "
                                 f"{gpu.mig_profiles[name].max_instances} per GPU)")
    slots = gpu.mig_memory_slices
    if sum(p.memory_slices for p in profiles) > slots:
        raise PlacementError(f"{gpu.name}: {', '.join(names)} need {sum(p.memory_slices for p in profiles)} memory "
                             f"slots of {slots} (MIG-3)")
    order = sorted(range(len(names)), key=lambda i: (-profiles[i].memory_slices, names[i], i))
    starts: list[int] = [-1] * len(names)
    taken = [False] * slots

    def place(k: int) -> bool:
        if k == len(order):
            return True
        i = order[k]
        prof = profiles[i]
        previous = starts[order[k - 1]] if k and names[order[k - 1]] == names[i] else -1
        for start in prof.starts:
            end = start + prof.memory_slices
            if start <= previous or end > slots or any(taken[start:end]):
                continue
            taken[start:end] = [True] * (end - start)
            starts[i] = start
            if place(k + 1):
                return True
            taken[start:end] = [False] * (end - start)
        return False

    if not place(0):
        raise PlacementError(f"{gpu.name}: no valid layout holds {', '.join(names)} (MIG-3: each instance at one of "
                             "its profile's allowed starts, none overlapping)")
    placement = [(name, start) for name, start in zip(names, starts, strict=True)]
    check_placement(gpu, placement)
    return placement


def instance_spec(gpu: GpuSpec, name: str) -> GpuSpec:
    """A MIG instance as a GPU of its own (MIG-4): tensor peaks scaled by its share of SMs, HBM bandwidth by its
    share of memory slices, its profile's memory; power and interconnect stay the whole GPU's (the physical GPU
    is what draws power and is priced)."""
    prof = profile(gpu, name)
    sm_share = prof.sm_count / gpu.sm_count
    scale = {k: getattr(gpu, k) * sm_share for k in ("bf16_tflops", "fp8_tflops", "int8_tops")
             if getattr(gpu, k) is not None}
    return gpu.model_copy(update={
        "key": f"{gpu.key}:{name}",
        "name": f"{gpu.name} MIG {name}",
        "sm_count": prof.sm_count,
        "memory_gib": prof.memory_gib,
        "memory_bandwidth_gb_s": gpu.memory_bandwidth_gb_s * prof.memory_slices / gpu.mig_memory_slices,
        "mig_memory_slices": 0,
        "mig_profiles": {},
        **scale,
    })

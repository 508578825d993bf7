"""NVIDIA time-sliced vGPU: profiles, placement rules, default slices, and what a VM sees as its GPU.

The rules follow ``../shared/reference/gpu-sharing-autoscaling-cost.md`` section 3:

- VG-1: time-sliced vGPUs on one GPU run serially; during its slice a VM has all of the GPU's engines.
- VG-2/Table 3.4: the C-series profiles (``L4-6C`` ...) with their frame buffer and maximum count per GPU, in
  equal-size and in mixed-size mode.
- VG-4: the default time slice is 2 ms when the profile allows at most 8 vGPUs per GPU, else 1 ms.
- VG-8: frame buffer is allocated statically per VM; no oversubscription.
- VG-9: by default every vGPU on a GPU has the same frame-buffer size; mixed-size mode lowers the maxima.
- Table 3.1: fixed share is not supported in mixed-size mode.

Pure functions over catalog entries; the scenario layer turns :class:`~sim.sharing.PlacementError` into an
error naming the file and field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sim.catalog import GpuSpec, VgpuProfile
from sim.errors import unknown_name
from sim.sharing.mig import PlacementError


def profile(gpu: GpuSpec, name: str) -> VgpuProfile:
    """The time-sliced vGPU profile ``name`` of ``gpu`` (Table 3.4)."""
    if not gpu.vgpu_profiles:
        raise PlacementError(f"{gpu.name} has no vGPU profiles in the catalog (Table 3.4 lists L4, L40S and H100; "
                             "add vgpu_profiles to a catalog file for another GPU)")
    try:
        return gpu.vgpu_profiles[name]
    except KeyError:
        raise PlacementError(f"{gpu.name}: {unknown_name('vGPU profile', name, sorted(gpu.vgpu_profiles))} "
                             "(Table 3.4)") from None


def check_placement(gpu: GpuSpec, names: Sequence[str], mixed_sizes: bool = False) -> None:
    """Raise :class:`PlacementError` unless vGPUs of the profiles ``names`` can share one ``gpu`` (VG-8, VG-9)."""
    profiles = {name: profile(gpu, name) for name in names}
    sizes = {p.memory_gib for p in profiles.values()}
    if len(sizes) > 1 and not mixed_sizes:
        raise PlacementError(f"{gpu.name}: {', '.join(sorted(profiles))} have different frame-buffer sizes; in "
                             "equal-size mode every vGPU on a GPU has the same size (VG-9; set mixed_sizes: true "
                             "for vGPU 17 mixed-size mode)")
    for name, count in Counter(names).items():
        prof = profiles[name]
        limit, mode = (prof.max_mixed, "mixed-size") if mixed_sizes else (prof.max_equal, "equal-size")
        if count > limit:
            raise PlacementError(f"{gpu.name}: {count} x {name} on one GPU; {mode} mode allows at most {limit} "
                                 "(Table 3.4)")
    total = sum(profiles[n].memory_gib for n in names)
    full = max(p.memory_gib for p in gpu.vgpu_profiles.values())
    if total > full + 1e-9:
        raise PlacementError(f"{gpu.name}: {', '.join(names)} need {total:g} GB of frame buffer; the GPU has "
                             f"{full:g} GB and frame buffer is never oversubscribed (VG-8)")


def default_time_slice_s(gpu: GpuSpec, names: Sequence[str]) -> float:
    """VG-4: 2 ms when every profile on the GPU allows at most 8 vGPUs per GPU, else 1 ms."""
    most = max(profile(gpu, n).max_equal for n in names)
    return 0.002 if most <= 8 else 0.001


def vm_spec(gpu: GpuSpec, name: str) -> GpuSpec:
    """The GPU a VM with vGPU ``name`` sees: the whole GPU's compute and bandwidth (it has them during its slices,
    VG-6) and the profile's part of the frame buffer (VG-8). Profile sizes are nominal GB (48 on an L40S whose
    catalog memory is 45 GiB), so the VM gets the GPU's memory times profile size / full-GPU profile size."""
    prof = profile(gpu, name)
    full = max(p.memory_gib for p in gpu.vgpu_profiles.values())
    return gpu.model_copy(update={"name": f"{gpu.name} vGPU {name}", "memory_gib": gpu.memory_gib * prof.memory_gib
                                  / full, "mig_memory_slices": 0, "mig_profiles": {}, "vgpu_profiles": {}})

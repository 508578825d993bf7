"""Spec transfer: which measured GPU lends its efficiency curves to a GPU without measurements.

Only the H100 SXM and the L40S have measured operator tables (NVIDIA AIConfigurator, vLLM 0.24.0). Every
other GPU is predicted from its own spec sheet (peaks, bandwidth, interconnect) with the efficiencies of the
nearest measured design:

- **L4, RTX 4090 <- L40S.** Same Ada architecture (sm_89), same tensor cores and GDDR6/6X memory system, same
  FlashAttention-2 kernels in vLLM; they differ in SM count, clocks, bandwidth and power cap, which the spec
  sheet carries. The L4's 72 W cap may throttle clocks more than the L40S's 350 W under sustained GEMMs:
  unmeasured, so the L4 prediction is an honest spec transfer, not a measurement.
- **A40, T4 <- L40S.** GDDR6 PCIe parts with small L2 caches (6 MB, 4 MB): their memory-bound behaviour
  (GEMV-like decode GEMMs, decode attention) is closer to the L40S's than to an HBM part's. Their tensor-core
  generations are older (Ampere sm_86, Turing sm_75), so compute-bound efficiencies are a larger extrapolation.
- **H100 PCIe, H200 SXM <- H100 SXM.** Same Hopper die and kernels (FA3, CUTLASS sm_90); the PCIe card has fewer
  SMs, lower clocks and HBM2e; the H200 has the same compute and a larger, faster HBM3e.
- **A100 <- H100 SXM.** An HBM datacenter part with a large L2 (40 MB); its Ampere tensor cores lack the
  Hopper TMA/wgmma path, so compute-bound efficiency is an extrapolation, while memory-bound efficiency (HBM)
  transfers well.
- **Unknown GPUs** from user catalogs: Ada and Turing from the L40S; Hopper and Blackwell from the H100 SXM;
  Ampere by memory system: above 1.2 TB/s (HBM) from the H100 SXM, else from the L40S.
"""

from __future__ import annotations

from sim.catalog import GpuSpec

MEASURED = ("h100_sxm", "l40s")

TRANSFER_SOURCE = {
    "l4": "l40s",
    "rtx_4090": "l40s",
    "a40": "l40s",
    "t4": "l40s",
    "h100_pcie": "h100_sxm",
    "h200_sxm": "h100_sxm",
    "a100_80gb_sxm": "h100_sxm",
}


def transfer_source(gpu: GpuSpec, exclude: str | None = None) -> str:
    """The measured GPU whose curves ``gpu`` borrows (never ``exclude``, used for cross-GPU transfer tests)."""
    if gpu.key in TRANSFER_SOURCE:
        source = TRANSFER_SOURCE[gpu.key]
    elif gpu.key in MEASURED:
        source = gpu.key
    elif gpu.architecture in ("ada", "turing"):
        source = "l40s"
    elif gpu.architecture in ("hopper", "blackwell"):
        source = "h100_sxm"
    else:
        source = "h100_sxm" if gpu.memory_bandwidth_gb_s > 1200 else "l40s"
    if source == exclude:
        source = next(m for m in MEASURED if m != exclude)
    return source

"""Engine profiles: each serving stack (vLLM V1 and V0, TensorRT-LLM, SGLang, TGI, Triton, Ollama) as data.

A profile (``profiles.yaml``) is a scheduler policy (a key of :data:`sim.engine.scheduler.SCHEDULERS`), defaults for
the pool's ``engine`` block, and an efficiency set for the kernel model (``gpu_time_scale``, ``overlap_host``, and
host overheads from a fitted ``calibration`` file in this folder). :class:`sim.config.EngineConfig` fills the fields a
scenario leaves out from its profile; :func:`sim.perf.build_perf_model` applies the efficiency set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml

#: The host overheads a profile's calibration file may give (keys of :func:`sim.perf.step_overhead_defaults`).
OVERHEAD_KEYS = ("step_overhead_s", "per_sequence_overhead_s", "eager_overhead_per_layer_s")


@dataclass(frozen=True)
class EngineProfile:
    """One serving stack's behaviour as data (see ``profiles.yaml`` for the meaning of each field)."""

    name: str
    description: str
    source: str
    scheduler: str
    engine: dict = field(default_factory=dict)
    gpu_time_scale: float = 1.0
    overlap_host: bool = False
    overheads: dict = field(default_factory=dict)  # fitted host overheads, keyed as OVERHEAD_KEYS
    measured: str = "false"


def _calibration(name: str) -> dict:
    path = resources.files("sim.engine.profiles").joinpath(name)
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def engine_profiles() -> dict[str, EngineProfile]:
    """Every shipped profile, by name."""
    text = resources.files("sim.engine.profiles").joinpath("profiles.yaml").read_text(encoding="utf-8")
    out = {}
    for name, data in yaml.safe_load(text).items():
        perf = dict(data.get("perf") or {})
        scale, overheads = float(perf.get("gpu_time_scale", 1.0)), {}
        if "calibration" in perf:
            fitted = _calibration(perf["calibration"])
            scale = float(fitted.get("gpu_time_scale", scale))
            overheads = {k: float(fitted[k]) for k in OVERHEAD_KEYS if k in fitted}
        text = {key: " ".join(str(data[key]).split()) for key in ("description", "source")}
        out[name] = EngineProfile(name, text["description"], text["source"], data["scheduler"],
                                  dict(data.get("engine") or {}), scale, bool(perf.get("overlap_host", False)),
                                  overheads, str(data.get("measured", "false")))
    return out


def engine_defaults(profile: str) -> dict:
    """The ``engine`` block defaults of ``profile`` (with its scheduler); KeyError naming the known profiles."""
    profiles = engine_profiles()
    if profile not in profiles:
        raise KeyError(f"unknown engine profile {profile!r}; known: {', '.join(sorted(profiles))}")
    p = profiles[profile]
    return {"scheduler": p.scheduler, **p.engine}

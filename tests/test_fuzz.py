"""Property-based fuzzing of scenario files: bad input never crashes fleetsim.

Hypothesis starts from small valid scenarios (open and closed loop, HPA / KPA / KEDA / scheduled / predictive
autoscaling, vGPU / MIG / time-slicing / MPS sharing, spot and failures under a fleet autoscaler, traffic classes
with router rules and overflow, monitoring and maintenance, disaggregated prefill / decode, trace replay with
empirical lengths, a Hugging Face ``config.json`` model and an extra catalog file) and applies one to three
mutations: delete a key, replace a value with one of another type (huge and negative integers, NaN, infinities,
1e308, -0.0, unicode, empty and ``<script>`` strings, None, lists, mappings, booleans), swap a name for another
known one (GPUs, models, routers, schedulers, engine profiles, arrival processes, ...), insert an unknown key,
graft a block of another base scenario, or push a number to an edge. Sometimes the YAML text itself is broken
(truncated, random bytes, a non-UTF-8 byte, deep nesting, tabs, duplicate keys, object tags), a referenced file
(the trace, the length CSV, the config.json, the catalog) is corrupted, and random ``--set dotted.key=value``
overrides are added.

Properties:

- ``load_scenario`` returns a scenario or raises :class:`~sim.errors.FleetsimError`, nothing else;
- ``fleetsim validate`` (in-process) exits 0 or 2, never 3 and never with an exception; on 2, stderr is exactly one
  line ``fleetsim: error: <where>: ...`` where ``<where>`` is the scenario file, the ``--set`` override, or a file
  the scenario references (trace, lengths, config.json, catalog);
- ``fleetsim run`` of the documents that validate, kept tiny by ``--set`` caps (requests, clients, replicas,
  ``run.max_duration_s``), does the same. A run stopped by the per-run wall-clock guard is a hang, not a crash:
  it is counted as a hypothesis event (``pytest --hypothesis-show-statistics`` lists them), not a failure.

CI runs a fixed, derandomized set of examples (about 150 for validation, 40 for runs). For a long local hunt set
``FLEETSIM_FUZZ_EXAMPLES=N`` (N validation examples, N/4 runs); that also draws fresh random examples each time
instead of the fixed set (``pytest --hypothesis-seed=S`` replays one), e.g.::

    FLEETSIM_FUZZ_EXAMPLES=2000 OPENBLAS_NUM_THREADS=1 python -m pytest -q tests/test_fuzz.py \\
        --hypothesis-show-statistics

Crashes found by the fuzzer are kept below as plain regression tests (``REGRESSIONS``).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
import math
import os
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import event as _event
from hypothesis import note as _note
from hypothesis import strategies as st

from sim.cli import main
from sim.errors import FleetsimError
from sim.scenario import load_scenario

# ------------------------------------------------------------------------------------------------- budget

_SCALE = os.environ.get("FLEETSIM_FUZZ_EXAMPLES")
VALIDATE_EXAMPLES = int(_SCALE) if _SCALE else 150
RUN_EXAMPLES = max(1, int(_SCALE) // 4) if _SCALE else 40
#: A run longer than this (wall clock) is stopped and counted as a hang, not a crash.
RUN_WALL_S = 20.0
#: Validation longer than this is a failure: loading a scenario must be quick whatever the file holds.
VALIDATE_WALL_S = 30.0
#: Caps applied by ``--set`` to the runs, so each takes well under a second.
CAP_REQUESTS, CAP_CLIENTS, CAP_REPLICAS, CAP_DURATION_S = 12, 4, 4, 300.0

FUZZ_SETTINGS = {
    "deadline": None,
    "derandomize": not _SCALE,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}

# ---------------------------------------------------------------------------------------- referenced files

TRACE = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
         "2023-11-16 18:15:46.6805900,374,44\n"
         "2023-11-16 18:15:47.1000000,120,30\n"
         "2023-11-16 18:15:48.9951690,396,109\n"
         "2023-11-16 18:15:49.0000000,52,7\n"
         "2023-11-16 18:15:50.2500000,800,64\n"
         "2023-11-16 18:15:51.0000000,33,12\n")
LENGTHS = "prompt,output\n10,5\n200,40\n37,12\n512,128\n64,1\n"
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "head_dim": 64,
    "vocab_size": 128256, "max_position_embeddings": 8192, "tie_word_embeddings": True,
}
EXTRA_CATALOG = {
    "models": {"tiny-llama": {"name": "Tiny-Llama", "n_layers": 4, "hidden_size": 512, "n_heads": 8,
                              "n_kv_heads": 2, "head_dim": 64, "intermediate_size": 1408, "vocab_size": 32000,
                              "max_context_tokens": 4096}},
    "prices": [{"gpu": "t4", "provider": "acme", "tier": "on_demand", "instance": "t4.small", "usd_per_hour": 0.3}],
}
#: Files every example writes beside its scenario (relative name -> content).
AUX_FILES = {
    "trace.csv": TRACE.encode(),
    "lengths.csv": LENGTHS.encode(),
    "my-llama/config.json": json.dumps(LLAMA_CONFIG).encode(),
    "extra_catalog.yaml": yaml.safe_dump(EXTRA_CATALOG, sort_keys=False).encode(),
}

# ------------------------------------------------------------------------------------------ base scenarios

OPEN_LOOP = {"type": "open_loop", "arrival": {"process": "poisson", "rate_per_s": 5.0}, "num_requests": 20,
             "prompt_tokens": {"dist": "uniform", "low": 10, "high": 100}, "output_tokens": {"dist": "fixed",
                                                                                          "tokens": 10}}
L4_8B = {"gpu": "l4", "model": "llama-3.1-8b", "replicas": 1, "engine": {"max_model_len": 4096}}

#: Small valid scenarios (each runs in well under a second); the first is tests/test_bad_input.py's BASE.
BASES = {
    "open_loop": {"name": "bad-input", "workload": copy.deepcopy(OPEN_LOOP), "pools": {"l4": copy.deepcopy(L4_8B)}},
    "closed_loop": {
        "name": "closed", "seed": 3,
        "workload": {"type": "closed_loop", "clients": 3, "think_time_s": 0.5, "ramp_up_s": 1.0, "num_requests": 12,
                     "prompt_tokens": {"dist": "lognormal", "mean": 300, "cv": 1.0, "max_tokens": 2000},
                     "output_tokens": {"dist": "geometric", "mean": 20},
                     "shared_prefix": {"tokens": 64, "groups": 2, "block_tokens": 16}},
        "pools": {"h100": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "precision": "fp8", "kv_cache_dtype": "fp8",
                           "engine": {"profile": "sglang", "max_model_len": 8192, "max_num_seqs": 64,
                                      "enable_prefix_caching": True, "stepping": "iteration",
                                      "speculative": {"num_tokens": 3, "acceptance_rate": 0.7,
                                                      "draft_step_s": 0.0005}},
                           "perf": {"model": "constant", "step_s": 0.01, "per_token_s": 1e-5}}},
        "router": {"policy": "prefix_affinity"},
        "run": {"max_duration_s": 600, "trace_events": True},
    },
    "hpa": {
        "name": "hpa",
        "workload": {"type": "open_loop", "arrival": {"process": "gamma", "rate_per_s": 4.0, "cv": 2.0},
                     "duration_s": 30, "num_requests": 25,
                     "prompt_tokens": {"dist": "uniform", "low": 50, "high": 500},
                     "output_tokens": {"dist": "uniform", "low": 5, "high": 50}},
        "pools": {"l4": {
            "gpu": "l4", "model": "llama-3.1-8b", "precision": "fp8", "replicas": 1,
            "engine": {"max_model_len": 4096, "max_num_batched_tokens": 2048},
            "price": {"provider": "aws", "tier": "on_demand"},
            "autoscale": {"policy": "hpa", "min_replicas": 1, "max_replicas": 3, "sync_period_s": 5,
                          "scrape_interval_s": 5, "metric_delay_s": 1,
                          "metrics": [{"name": "queue_length", "target": 2}, {"name": "ttft_p90_s", "target": 1.0,
                                                                             "window_s": 30}],
                          "behavior": {"scale_up": {"stabilization_window_s": 0, "select_policy": "max",
                                                    "policies": [{"type": "pods", "value": 2, "period_s": 15}]},
                                       "scale_down": {"stabilization_window_s": 60,
                                                      "policies": [{"type": "percent", "value": 50,
                                                                    "period_s": 15}]}}},
            "lifecycle": {"node_provision_s": {"dist": "fixed", "s": 20}, "warmup_s": {"dist": "exponential",
                                                                                        "mean_s": 10},
                          "readiness_s": {"dist": "uniform", "low_s": 0, "high_s": 2}, "image_gb": 5,
                          "weight_load_gb_s": 2.0, "drain_timeout_s": 10, "on_drain_timeout": "fail"},
            "nodes": {"gpus_per_node": 2, "release_after_idle_s": 30, "stockout_probability": 0.1},
            "billing": {"granularity_s": 1, "minimum_s": 60}}},
        "router": {"policy": "jsq_tokens"},
        "slo": {"ttft_s": 2.0, "tpot_s": 0.1, "e2e_s": 30},
    },
    "kpa_keda": {
        "name": "kpa",
        "workload": {"type": "open_loop",
                     "arrival": {"process": "piecewise", "times_s": [0, 10, 20], "rates_per_s": [1, 6, 0],
                                 "period_s": 40},
                     "num_requests": 20, "prompt_tokens": {"dist": "fixed", "tokens": 128},
                     "output_tokens": {"dist": "fixed", "tokens": 16}},
        "pools": {
            "kpa": {"gpu": "l40s", "model": "llama-3.2-3b", "replicas": 1, "engine": {"max_model_len": 4096},
                    "autoscale": {"policy": "kpa", "metric": "concurrency", "target": 4, "max_replicas": 3,
                                  "min_replicas": 1, "tick_s": 2, "scale_to_zero_grace_s": 5}},
            "keda": {"gpu": "a100_80gb_sxm", "model": "mistral-7b", "replicas": 1,
                     "engine": {"max_model_len": 4096, "profile": "vllm_v0"},
                     "autoscale": {"policy": "keda", "min_replicas": 0, "max_replicas": 2, "cooldown_s": 20,
                                   "polling_interval_s": 5, "triggers": [{"name": "queue_length", "target": 3,
                                                                          "activation": 1}]}},
        },
        "router": {"policy": "power_of_two"},
    },
    "scheduled": {
        "name": "scheduled",
        "workload": {"type": "open_loop", "arrival": {"process": "diurnal", "mean_rate_per_s": 3, "amplitude": 0.5,
                                                      "period_s": 60, "peak_s": 20},
                     "num_requests": 15, "prompt_tokens": {"dist": "uniform", "low": 10, "high": 300},
                     "output_tokens": {"dist": "fixed", "tokens": 8}},
        "pools": {
            "day": {"gpu": "h100_pcie", "model": "llama-3.1-8b", "replicas": 1, "engine": {"max_model_len": 4096},
                    "autoscale": {"policy": "scheduled", "period_s": 60,
                                  "schedule": [{"at_s": 0, "replicas": 1}, {"at_s": 30, "replicas": 2}]}},
            "pred": {"gpu": "h200_sxm", "model": "llama-3.1-8b", "replicas": 1,
                     "engine": {"max_model_len": 4096, "profile": "trtllm"}, "perf": {"model": "roofline"},
                     "autoscale": {"policy": "predictive", "capacity_rps": 2.0, "min_replicas": 1,
                                   "max_replicas": 2, "period_s": 10, "bucket_s": 10, "history_s": 60}},
        },
    },
    "vgpu": {
        "name": "vgpu",
        "workload": {"type": "open_loop", "arrival": {"process": "constant", "rate_per_s": 4.0}, "num_requests": 16,
                     "prompt_tokens": {"dist": "lognormal", "mean": 300, "cv": 0.5},
                     "output_tokens": {"dist": "fixed", "tokens": 12}},
        "pools": {
            "vms": {"gpu": "l4", "model": "llama-3.2-1b", "replicas": 2, "engine": {"max_model_len": 4096},
                    "sharing": {"mode": "vgpu", "profile": "L4-6C", "scheduler": "equal_share",
                                "switch_cost_us": 50, "fidelity": "quantum", "time_slice_ms": 2}},
            "mig": {"gpu": "h100_sxm", "model": "llama-3.2-1b", "replicas": 2, "engine": {"max_model_len": 4096},
                    "sharing": {"mode": "mig", "profile": "1g.10gb"}},
            "ts": {"gpu": "l40s", "model": "llama-3.2-1b", "replicas": 2, "engine": {"max_model_len": 4096},
                   "sharing": {"mode": "timeslice", "replicas_per_gpu": 2, "memory_fraction": 0.4}},
            "mps": {"gpu": "a40", "model": "llama-3.2-1b", "replicas": 2, "engine": {"max_model_len": 4096},
                    "sharing": {"mode": "mps", "replicas_per_gpu": 2, "active_thread_percentage": 50}},
        },
        "router": {"policy": "round_robin"},
    },
    "spot": {
        "name": "spot",
        "workload": {"type": "open_loop", "arrival": {"process": "poisson", "rate_per_s": 3.0}, "duration_s": 60,
                     "num_requests": 20, "prompt_tokens": {"dist": "uniform", "low": 10, "high": 200},
                     "output_tokens": {"dist": "uniform", "low": 1, "high": 30}},
        "pools": {
            "spot": {"gpu": "l40s", "model": "llama-3.1-8b", "precision": "fp8", "replicas": 1,
                     "engine": {"max_model_len": 4096}, "price": {"provider": "aws", "tier": "spot"},
                     "spot": {"reclaims_per_gpu_hour": 50, "notice_s": 30, "on_reclaim": "requeue"},
                     "nodes": {"stockout_probability": 0.5, "provision_timeout_s": 60, "retry_backoff_s": 10},
                     "lifecycle": {"node_provision_s": {"dist": "fixed", "s": 5}, "warmup_s": {"dist": "fixed",
                                                                                              "s": 5}}},
            "on_demand": {"gpu": "l40s", "model": "llama-3.1-8b", "precision": "fp8", "replicas": 0,
                          "engine": {"max_model_len": 4096},
                          "failures": {"mtbf_gpu_hours": 0.05, "on_failure": "fail"},
                          "price": {"usd_per_gpu_hour": 1.5}},
        },
        "fleet_autoscale": {"pools": ["spot", "on_demand"], "strategy": "spot_first",
                            "capacity_rps": {"spot": 2.0, "on_demand": 2.0}, "min_replicas": {"spot": 1},
                            "max_replicas": {"spot": 3, "on_demand": 2}, "window_s": 20, "period_s": 10,
                            "scale_down_delay_s": 30},
    },
    "classes": {
        "name": "classes",
        "workload": {**copy.deepcopy(OPEN_LOOP), "model": "llama-3.1-8b", "num_requests": 10},
        "classes": [{"name": "assistant", "priority": -1, "slo": {"ttft_s": 0.5},
                     "workload": {"type": "open_loop", "arrival": {"process": "poisson", "rate_per_s": 2},
                                  "num_requests": 8, "model": "llama-3.2-1b",
                                  "prompt_tokens": {"dist": "fixed", "tokens": 40},
                                  "output_tokens": {"dist": "fixed", "tokens": 8}}}],
        "pools": {
            "big": {**copy.deepcopy(L4_8B), "engine": {"max_model_len": 4096, "scheduling_policy": "priority"},
                    "sharing": {"mode": "passthrough", "hypervisor_overhead": 0.03}},
            "big2": {**copy.deepcopy(L4_8B), "gpu": "l40s", "engine": {"max_model_len": 4096,
                                                                       "scheduler": "prefill_first"}},
            "small": {"gpu": "t4", "model": "llama-3.2-1b", "precision": "fp16", "replicas": 1,
                      "engine": {"max_model_len": 2048, "scheduler": "no_evict"}},
        },
        "router": {"policy": "least_outstanding",
                   "rules": [{"class": "assistant", "pools": ["small"]},
                             {"min_prompt_tokens": 50, "max_output_tokens": 100, "pools": ["big", "big2"]}],
                   "overflow": [{"from": "big", "to": ["big2"], "queue_above": 2}]},
        "slo": {"ttft_s": 2.0, "tpot_s": 0.1},
        "monitoring": {"interval_s": 5, "latency_window_s": 30,
                       "alerts": [{"name": "q", "metric": "queue_depth", "above": 3, "for_s": 5, "pool": "big"},
                                  {"name": "u", "metric": "gpu_utilisation", "below": 0.2}]},
        "maintenance": {"windows": [{"pool": "big2", "host": 0, "start_s": 1, "duration_s": 3}],
                        "restart_s": 2, "migration_gb_s": 10, "switchover_s": 0.2},
    },
    "disaggregated": {
        "name": "disagg",
        "workload": {**copy.deepcopy(OPEN_LOOP), "num_requests": 10,
                     "prompt_tokens": {"dist": "lognormal", "mean": 500, "cv": 0.8, "max_tokens": 3000}},
        "pools": {
            "prefill": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "role": "prefill", "tensor_parallel": 2,
                        "engine": {"max_model_len": 4096}},
            "decode": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "role": "decode", "pipeline_parallel": 2,
                       "engine": {"max_model_len": 4096, "profile": "tgi"}},
        },
        "kv_transfer": {"bandwidth_gb_s": 50.0, "latency_s": 0.0005},
    },
    "trace": {
        "name": "trace",
        "catalog_files": ["extra_catalog.yaml"],
        "workload": {"type": "trace", "path": "trace.csv", "format": "azure", "time_scale": 0.5, "spread_s": 0.5,
                     "rate_scale": 1.5, "model": "llama-3.1-8b"},
        "classes": [{"name": "batch", "priority": 1,
                     "workload": {"type": "open_loop", "arrival": {"process": "constant", "rate_per_s": 2},
                                  "num_requests": 6, "model": "tiny-llama",
                                  "prompt_tokens": {"dist": "empirical", "path": "lengths.csv", "column": "prompt"},
                                  "output_tokens": {"dist": "empirical", "path": "lengths.csv", "column": "output",
                                                    "paired": True}}}],
        "pools": {
            "main": {**copy.deepcopy(L4_8B), "precision": "fp8"},
            "tiny": {"gpu": "t4", "model": "tiny-llama", "engine": {"max_model_len": 4096, "profile": "ollama"},
                     "price": {"provider": "acme"}},
            "hf": {"gpu": "a40", "model": "my-llama/config.json", "engine": {"max_model_len": 4096},
                   "perf": {"model": "kernel", "calibrated": False}},
        },
        "router": {"policy": "random"},
    },
}

# ---------------------------------------------------------------------------------------------- name sets


def _names() -> dict[str, list]:
    """Known names, by the key they appear under, for the swap mutation (any of them may go anywhere)."""
    from sim.catalog import load_catalog
    from sim.cluster.router import ROUTERS
    from sim.engine.profiles import engine_profiles
    from sim.engine.scheduler import SCHEDULERS

    catalog = load_catalog()
    gpus, models = sorted(catalog.gpus), sorted(catalog.models)
    vgpu = sorted({p for g in catalog.gpus.values() for p in g.vgpu_profiles})
    mig = sorted({p for g in catalog.gpus.values() for p in g.mig_profiles})
    metrics = ["concurrency", "queue_length", "kv_cache_utilization", "gpu_utilization", "request_rate",
               "ttft_p90_s", "e2e_p99_s", "tpot_p0_s", "queue_p100_s", "rps"]
    return {
        "gpu": gpus,
        "model": [*models, "my-llama/config.json", "tiny-llama", "kernel", "roofline", "constant"],
        "policy": [*sorted(ROUTERS), "hpa", "keda", "kpa", "scheduled", "predictive"],
        "scheduler": [*sorted(SCHEDULERS), "best_effort", "equal_share", "fixed_share"],
        "profile": [*sorted(engine_profiles()), *vgpu, *mig],
        "process": ["poisson", "gamma", "constant", "piecewise", "diurnal"],
        "dist": ["fixed", "uniform", "lognormal", "geometric", "empirical", "exponential"],
        "type": ["open_loop", "closed_loop", "trace", "fitted", "servegen", "pods", "percent"],
        "mode": ["mig", "passthrough", "vgpu", "timeslice", "mps"],
        "precision": ["bf16", "fp16", "fp8", "int8", "int4"],
        "kv_cache_dtype": ["auto", "bf16", "fp16", "fp8"],
        "tier": ["on_demand", "spot", "reserved", "self_hosted"],
        "provider": sorted({p.provider for p in catalog.prices}),
        "format": ["azure", "mooncake", "burstgpt", "csv", "parquet"],
        "time_unit": ["s", "ms", "us", "ns"],
        "strategy": ["priority", "cheapest", "spot_first"],
        "demand": ["observed", "forecast"],
        "metric": ["concurrency", "rps", "gpu_utilisation", "queue_depth", "ttft_p99_s", "cost_per_request_usd"],
        "name": metrics,
        "role": ["both", "prefill", "decode"],
        "fidelity": ["fluid", "quantum"],
        "stepping": ["fast", "iteration"],
        "scheduling_policy": ["fcfs", "priority"],
        "select_policy": ["max", "min", "disabled"],
        "on_reclaim": ["requeue", "fail"],
        "on_failure": ["requeue", "fail"],
        "on_drain_timeout": ["requeue", "fail"],
        "column": ["prompt", "output", "ContextTokens"],
        "path": ["trace.csv", "lengths.csv", "my-llama/config.json", "extra_catalog.yaml", "missing.csv", ".", ""],
        "pool": ["l4", "big", "big2", "small", "spot", "nowhere"],
        "pools": [["big"], ["small", "big2"], ["spot", "on_demand"], ["nowhere"], []],
        "class": ["assistant", "default", "batch", "nobody"],
        "catalog_files": [["extra_catalog.yaml"], ["trace.csv"], ["missing.yaml"], ["my-llama/config.json"]],
        "calibration_file": ["extra_catalog.yaml", "trace.csv", "missing.yaml", "my-llama/config.json"],
        "gpus_per_node": [1, 2, 3, 8, 64],
        "tensor_parallel": [1, 2, 3, 4, 8, 64],
        "pipeline_parallel": [1, 2, 3, 16],
    }


NAMES = _names()

# ------------------------------------------------------------------------------------------------ values

EDGE_INTS = [0, -1, 1, 2, 3, 7, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63), 10**30, -(10**30)]
EDGE_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, -0.0, 0.0, 5e-324, 1e-300, 0.5, 1.0000001, 1e9,
               -0.5, 86400.0]
EDGE_STRINGS = ["", " ", "<script>alert(1)</script>", "é", "🚀", "Ωmega", "\t", "null", "~", "yes", "no", "1e9",
                "0x10", "NaN", "-.inf", "../../etc/passwd", "/", ".", "${HOME}", "%s%n", "a" * 300, "\u202e",
                "a\x00b", "'", "\"", "key: value", "- item", "{", "[1, 2", "#", "&anchor", "*alias", "!!binary",
                "2023-01-01", "1_000", "0o17", "+12", ".5", "1:20", "l4", "h100"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EDGE_INTS),
    st.integers(),
    st.sampled_from(EDGE_FLOATS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EDGE_STRINGS),
    st.text(max_size=12),
    st.just(datetime.date(2023, 11, 16)),
)
keys = st.one_of(st.sampled_from(["gpu", "model", "x", "", "type", "replicas", "0", "<script>", "é"]),
                 st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none(),
                 st.just(datetime.date(2023, 1, 1)), st.just(1.5))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(keys, inner, max_size=3)), max_leaves=6)

# ------------------------------------------------------------------------------------------- doc editing


def note(text: str) -> None:
    """hypothesis.note, also usable outside a hypothesis test (the regression tests)."""
    with contextlib.suppress(Exception):
        _note(text)


def event(text: str) -> None:
    with contextlib.suppress(Exception):
        _event(text)


def walk(node, prefix: tuple = ()):
    """Every (path, value) in a document, the root first; a path is a tuple of keys and list indices."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, (*prefix, i))


def get(doc, path: tuple):
    for part in path:
        doc = doc[part]
    return doc


def put(doc, path: tuple, value):
    """``doc`` with the value at ``path`` replaced (the root itself when the path is empty)."""
    if not path:
        return value
    get(doc, path[:-1])[path[-1]] = value
    return doc


def remove(doc, path: tuple):
    parent = get(doc, path[:-1])
    del parent[path[-1]]
    return doc


def shape(path: tuple) -> tuple:
    """A path with pool names, class and list positions blurred, to match blocks across base scenarios."""
    out = []
    for i, part in enumerate(path):
        after_pools = i > 0 and path[i - 1] in ("pools", "capacity_rps", "min_replicas", "max_replicas")
        out.append("*" if isinstance(part, int) or after_pools else part)
    return tuple(out)


BLOCKS = [(name, path, value) for name, base in BASES.items() for path, value in walk(base) if path]


@st.composite
def mutated(draw, doc, mild: bool = False):
    """``doc`` after one mutation; with ``mild``, only the kinds likely to keep it valid."""
    kinds = ["swap", "edge", "graft", "delete"] if mild else [
        "delete", "replace", "swap", "insert", "graft", "edge", "replace"]
    kind = draw(st.sampled_from(kinds))
    paths = [p for p, _ in walk(doc)]
    inner = [p for p in paths if p]
    dicts = [p for p, v in walk(doc) if isinstance(v, dict)]
    if kind == "delete" and inner:
        path = draw(st.sampled_from(inner))
        note(f"mutation: delete {path}")
        return remove(doc, path)
    if kind == "swap":
        named = [p for p in inner if isinstance(p[-1], str) and p[-1] in NAMES]
        if named:
            path = draw(st.sampled_from(named))
            value = copy.deepcopy(draw(st.sampled_from(NAMES[path[-1]] + NAMES[draw(st.sampled_from(sorted(NAMES)))])))
            note(f"mutation: swap {path} = {value!r}")
            return put(doc, path, value)
    if kind == "edge":
        numbers = [p for p, v in walk(doc) if p and isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers:
            path = draw(st.sampled_from(numbers))
            old = get(doc, path)
            value = draw(st.one_of(st.sampled_from(EDGE_INTS + EDGE_FLOATS),
                                   st.sampled_from([old * 10**6, -old, old + 1, old - 1, old / 3, float(old),
                                                    int(old) if math.isfinite(old) else 0, str(old)])))
            note(f"mutation: edge {path} = {value!r}")
            return put(doc, path, value)
    if kind == "graft":
        _, src, block = draw(st.sampled_from(BLOCKS))
        same = [p for p in dicts if shape(p) == shape(src[:-1])]
        anywhere = st.sampled_from(dicts or [()])
        parent = draw(st.sampled_from(same)) if same and draw(st.integers(0, 3)) else draw(anywhere)
        if isinstance(get(doc, parent), dict):
            note(f"mutation: graft {src} at {(*parent, src[-1])}")
            return put(doc, (*parent, src[-1]), copy.deepcopy(block))
    if kind == "insert" and dicts:
        parent = draw(st.sampled_from(dicts))
        key = draw(keys)
        value = draw(values)
        note(f"mutation: insert {(*parent, key)} = {value!r}")
        return put(doc, (*parent, key), value)
    # replace (and the fallback of a kind that found nothing to act on)
    path = draw(st.sampled_from(paths if draw(st.integers(0, 20)) == 0 else inner or paths))
    value = draw(values)
    note(f"mutation: replace {path} = {value!r}")
    return put(doc, path, value)


def dump(doc) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@st.composite
def corrupted(draw, text: str) -> bytes:
    """The YAML text of a scenario, broken in one way."""
    data = text.encode("utf-8")
    kind = draw(st.sampled_from(["truncate", "bytes", "non_utf8", "nest", "tab", "duplicate", "tag", "bom",
                                 "anchor", "flow"]))
    at = draw(st.integers(0, len(data)))
    note(f"corruption: {kind} at byte {at}")
    if kind == "truncate":
        return data[:at]
    if kind == "bytes":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if kind == "non_utf8":
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + data[at:]
    if kind == "nest":
        depth = draw(st.sampled_from([10, 200, 2000, 20000]))
        return data + f"\ndeep: {'[' * depth}{']' * depth}\n".encode()
    if kind == "tab":
        return data.replace(b"\n  ", b"\n\t", 1)
    if kind == "duplicate":
        first = data.split(b"\n", 1)[0]
        return data + b"\n" + first + b"\n"
    if kind == "tag":
        tag = draw(st.sampled_from(["!!python/object/apply:os.system ['true']", "!!python/name:os.system",
                                    "!!binary aGVsbG8=", "!!set {a, b}", "!!timestamp 2001-12-14", "!custom x",
                                    "!!float nan", "!!int 0x1F"]))
        return data + f"\nname: {tag}\n".encode()
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind == "anchor":
        return data + b"\nx-anchors: &a [1, 2, 3]\nx-use: [*a, *a, *a]\n"
    return b"{" + data  # an unclosed flow mapping


@st.composite
def override(draw, doc) -> str:
    """One ``--set dotted.key=value`` (a path of the document or a made-up one; a value as YAML or junk)."""
    paths = [".".join(str(p) for p in path) for path, _ in walk(doc) if path]
    key = draw(st.one_of(st.sampled_from(paths or ["name"]), st.sampled_from(
        ["", ".", "a..b", "pools", "pools.nowhere.gpu", "workload.0", "classes.5.name", "run.max_duration_s",
         "seed", "x.y.z", "pools.l4.replicas.count"]), st.text(max_size=10)))
    raw = draw(st.one_of(scalars.map(lambda v: yaml.safe_dump(v, default_flow_style=True).removesuffix("\n...\n")
                                     .strip()),
                         st.sampled_from(["", "[1", "{a: 1}", "1e9", "-1", "nan", ".inf", "null", "true", "0x10",
                                          "!!python/name:os.system", "&a [*a]", "'unterminated"]),
                         st.text(max_size=10)))
    return draw(st.sampled_from([f"{key}={raw}", key, f"{key}=={raw}"]) if not draw(st.integers(0, 9)) else
                st.just(f"{key}={raw}"))


@dataclass
class Case:
    """One fuzzed input: the scenario file's bytes, the files beside it, and the ``--set`` overrides."""

    base: str
    doc: object
    text: bytes
    overrides: list[str] = field(default_factory=list)
    aux: dict[str, bytes] = field(default_factory=lambda: dict(AUX_FILES))
    filename: str = "scenario.yaml"
    out: bool = False  # run with --out (writes the results folder)

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.aux.items() if AUX_FILES.get(k) != v}
        return (f"Case(base={self.base!r}, filename={self.filename!r}, overrides={self.overrides!r}, out={self.out}, "
                f"aux_changed={changed!r},\ntext=\n{self.text.decode('utf-8', 'backslashreplace')})")


@st.composite
def cases(draw, mild: bool = False) -> Case:
    base = draw(st.sampled_from(sorted(BASES)))
    doc = copy.deepcopy(BASES[base])
    for _ in range(draw(st.integers(0 if mild else 1, 2 if mild else 3))):
        doc = draw(mutated(doc, mild))
    text = dump(doc).encode("utf-8")
    case = Case(base, doc, text)
    if mild:
        case.out = draw(st.integers(0, 3)) == 0
        return case
    if draw(st.integers(0, 5)) == 0:
        case.text = draw(corrupted(dump(doc)))
    if draw(st.integers(0, 3)) == 0:
        case.overrides = draw(st.lists(override(doc), min_size=1, max_size=2))
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from(sorted(AUX_FILES)))
        data = AUX_FILES[name]
        at = draw(st.integers(0, len(data)))
        case.aux[name] = draw(st.sampled_from([data[:at], data[:at] + b"\xff" + data[at:], b"",
                                               data[:at] + b",,x\n" + data[at:], data.replace(b"1", b"-1")]))
    if draw(st.integers(0, 9)) == 0:
        case.filename = draw(st.sampled_from(["my scenario é.yaml", "s.yml", "noext", "-dash.yaml", "a'b.yaml"]))
    return case


# -------------------------------------------------------------------------------------------- the checks


class _Hang(BaseException):
    """Raised by the wall-clock guard: a BaseException, so that no ``except Exception`` swallows it."""


@contextlib.contextmanager
def wall_clock(seconds: float):
    """Raise :class:`_Hang` in the main thread after ``seconds`` of wall-clock time."""

    def fire(signum, frame):
        raise _Hang

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def write_case(folder: Path, case: Case) -> Path:
    for name, data in case.aux.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    path = folder / case.filename
    path.write_bytes(case.text)
    return path


def places(folder: Path, path: Path, doc) -> list[str]:
    """What an error line may start with: the scenario file, an override, or a file the scenario names."""
    out = [str(path), "--set ", str(folder)]
    for _, value in walk(doc):
        if isinstance(value, str) and value:
            out.append(value)
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                out.append(str((folder / value).resolve()))
    return out


def cli(*argv: str, wall_s: float) -> tuple[int, str, str]:
    """``fleetsim ARGV`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), wall_clock(wall_s):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def check_outcome(rc: int, err: str, allowed: list[str]) -> None:
    assert "Traceback" not in err, err
    assert rc in (0, 2), f"exit status {rc} (3: an invariant broke), stderr: {err!r}"
    if rc == 2:
        lines = err.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
        prefix = "fleetsim: error: "
        assert lines[0].startswith(prefix), lines[0]
        where = lines[0][len(prefix):]
        assert any(where.startswith(p) for p in allowed), f"the error names no file nor override: {lines[0]!r}"


def set_args(overrides: list[str]) -> list[str]:
    return [f"--set={o}" for o in overrides]


def check_validate(folder: Path, case: Case) -> bool:
    """Properties (b) and (a) for ``fleetsim validate``; whether the case validated."""
    path = write_case(folder, case)
    try:
        with wall_clock(VALIDATE_WALL_S):
            load_scenario(path, case.overrides)
        loaded = True
    except FleetsimError:
        loaded = False
    except _Hang:
        pytest.fail(f"load_scenario took more than {VALIDATE_WALL_S:g} s")
    try:
        rc, _, err = cli("validate", str(path), *set_args(case.overrides), wall_s=VALIDATE_WALL_S)
    except _Hang:
        pytest.fail(f"fleetsim validate took more than {VALIDATE_WALL_S:g} s")
    check_outcome(rc, err, places(folder, path, case.doc))
    assert (rc == 0) == loaded, f"load_scenario {'passed' if loaded else 'failed'} but validate exited {rc}: {err}"
    event(f"validate exit {rc}")
    return rc == 0


def caps(path: Path, overrides: list[str]) -> list[str]:
    """``--set`` overrides that keep a run of a valid scenario tiny."""
    scenario = load_scenario(path, overrides)
    out = []
    for i, (_, wl, _) in enumerate(scenario.traffic()):
        at = "workload" if i == 0 else f"classes.{i - 1}.workload"
        if wl.type in ("open_loop", "closed_loop", "trace") and (wl.num_requests or math.inf) > CAP_REQUESTS:
            out.append(f"{at}.num_requests={CAP_REQUESTS}")
        if wl.type == "closed_loop" and wl.clients > CAP_CLIENTS:
            out.append(f"{at}.clients={CAP_CLIENTS}")
    for name, pool in scenario.pools.items():
        if pool.replicas > CAP_REPLICAS:
            out.append(f"pools.{name}.replicas={CAP_REPLICAS}")
    if (scenario.run.max_duration_s or math.inf) > CAP_DURATION_S:
        out.append(f"run.max_duration_s={CAP_DURATION_S:g}")
    return out


def check_run(folder: Path, case: Case) -> None:
    if not check_validate(folder, case):
        return
    path = folder / case.filename
    try:
        extra = caps(path, case.overrides)
    except FleetsimError:  # a cap that does not fit (e.g. replicas under an autoscaler's min) is a fine outcome
        event("caps rejected")
        return
    overrides = [*case.overrides, *extra]
    note(f"run overrides: {overrides}")
    out = ["--out", str(folder / "results")] if case.out else []
    try:
        rc, _, err = cli("run", str(path), "--quiet", *out, *set_args(overrides), wall_s=RUN_WALL_S)
    except _Hang:
        event(f"run stopped after {RUN_WALL_S:g} s (a hang, not a crash)")
        return
    check_outcome(rc, err, places(folder, path, case.doc))
    event(f"run exit {rc}")


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted(BASES))
def test_base_scenarios_validate_and_run(name):
    """The fuzzer starts from valid scenarios that run to the end."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_case(folder, Case(name, BASES[name], dump(BASES[name]).encode()))
        rc, _, err = cli("validate", str(path), wall_s=VALIDATE_WALL_S)
        assert (rc, err) == (0, ""), err
        rc, out, err = cli("run", str(path), "--quiet", wall_s=RUN_WALL_S)
        assert rc == 0, err
        assert "finished" in out


@settings(max_examples=VALIDATE_EXAMPLES, **FUZZ_SETTINGS)
@given(case=cases())
def test_fuzzed_scenarios_validate_or_fail_cleanly(case):
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        check_validate(Path(tmp), case)


@settings(max_examples=RUN_EXAMPLES, **FUZZ_SETTINGS)
@given(case=cases(mild=True))
def test_fuzzed_scenarios_run_or_fail_cleanly(case):
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        check_run(Path(tmp), case)


# ------------------------------------------------------------------------------------ crashes found so far

#: (id, base scenario, edits as {dotted path: value}, text appended to the YAML, overrides, command): inputs that
#: crashed once, each with the fix that made it a clean error (or a clean run).
REGRESSIONS = [
    # simulate() nested its stop condition in each progress slice's condition; SimPy detaches a nested condition
    # once the outer one fires, so every `fleetsim run` with run.max_duration_s ran its clock to infinity and
    # crashed with "Event ... has already been triggered" (fixed in sim/simulate.py).
    ("max-duration-with-progress-bar", "open_loop", {"run": {"max_duration_s": 2.0}}, "", [], "run"),
    # A YAML date as a mapping key made json.dumps raise TypeError (fixed in sim/scenario.py: _json_keys).
    ("date-as-key", "open_loop", {}, "2024-01-01: x\n", [], "validate"),
    ("date-as-pool-name", "open_loop", {"pools": {datetime.date(2024, 1, 1): copy.deepcopy(L4_8B)}}, "", [], "run"),
    # Deep nesting raised RecursionError in the YAML parser (>~300 levels) and an alias inside the node it names
    # recursed forever; an alias bomb would expand to 10^8 values in json.dumps (fixed in sim/yamlio.py:
    # load_yaml refuses more than 64 levels and more than 10^7 values).
    ("deep-flow-sequence", "open_loop", {}, "deep: " + "[" * 2000 + "]" * 2000 + "\n", [], "validate"),
    ("deep-mapping", "open_loop", {}, "deep: " + "{a: " * 300 + "1" + "}" * 300 + "\n", [], "validate"),
    ("alias-inside-itself", "open_loop", {}, "deep: &a [*a]\n", [], "validate"),
    ("alias-bomb", "open_loop", {}, "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)), [],
     "validate"),
    ("deep-set-value", "open_loop", {}, "", ["name=" + "[" * 2000], "validate"),
    # A line break in a --set key or a pool name made the error two lines (fixed in sim/errors.py: FleetsimError
    # escapes line breaks).
    ("line-break-in-set-key", "open_loop", {}, "", ["a\nb=1"], "validate"),
    # A strict round robin of vGPU slices resumed after an idle spell with a slot left of -1.7e-18 s by rounding:
    # SimPy's "Negative delay" ValueError mid-run (fixed in sim/sharing/slicing.py: clamped at 0).
    ("vgpu-quantum-idle-resume", "vgpu", {"router": {"policy": "random"}}, "", [], "run"),
    ("line-break-in-pool-name", "open_loop", {"pools": {"a\u2028b": {**L4_8B, "gpu": "h100"}}}, "", [], "validate"),
]


def _edited(base: str, edits: dict) -> dict:
    doc = copy.deepcopy(BASES[base])
    for dotted, value in edits.items():
        *parents, last = dotted.split(".")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value
    return doc


@pytest.mark.parametrize(("base", "edits", "text", "overrides", "command"),
                         [pytest.param(*r[1:], id=r[0]) for r in REGRESSIONS])
def test_fuzzer_regressions(base, edits, text, overrides, command):
    doc = _edited(base, edits)
    case = Case(base, doc, dump(doc).encode() + text.encode(), overrides)
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        (check_run if command == "run" else check_validate)(Path(tmp), case)

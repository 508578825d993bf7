"""The compiled engine core (``sim/engine/_core.c``) gives the per-step reference's results.

``run.core: auto`` (the default) runs a static fleet on the compiled core; ``python`` runs the SimPy engine, and
with ``engine.stepping: iteration`` (one event per engine step) it is the reference compared against here. Over
random eligible scenarios (hypothesis: routers, schedulers, chunked prefill, small KV caches that force preemption,
the kernel, roofline and constant step models, mixed pools whose ``max_model_len`` differ, too-long requests,
traces) the request records, busy time, time series and summary must agree to 1e-9 s. Scenarios the core does not
cover fall back to the Python engine, and say why.
"""

from __future__ import annotations

import itertools
import math
import shutil
import sysconfig

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import simulate
from sim.engine import core as core_module
from sim.scenario import validate_scenario
from tests.conftest import AZURE_CONV, draw_engine, merge, scenario
from tests.test_fast_forward import PERF, assert_same


def _compiler_found() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


def test_the_core_is_built_where_a_c_compiler_is():
    """``setup.py`` marks the extension optional, so a failed build is silent: this catches it."""
    assert core_module._core is not None or not _compiler_found(), (
        "the compiled core is not built although a C compiler was found; `pip install -e . -v` shows why")


needs_core = pytest.mark.skipif(core_module._core is None, reason="the compiled core is not built")

ROUTERS = sorted(core_module.ROUTER_CODES)
GPUS = [("h100_sxm", "llama-3.1-8b"), ("l4", "llama-3.1-8b"), ("l40s", "llama-3.1-8b")]


def with_core(sc, core: str, stepping: str = "fast"):
    patch = {"run": {"core": core}, "pools": {name: {"engine": {"stepping": stepping}} for name in sc.pools}}
    return simulate(validate_scenario(merge(sc.model_dump(mode="json", by_alias=True), patch), "test"))


def assert_summaries_agree(a: dict, b: dict, path: str = "") -> None:
    """Every figure of two summaries, floats to 1e-9 (relative for large ones); the engine block aside."""
    assert a.keys() == b.keys(), path
    for key in a:
        if path == "" and key == "engine":
            continue
        x, y = a[key], b[key]
        if isinstance(x, dict):
            assert_summaries_agree(x, y, f"{path}.{key}")
        elif isinstance(x, float) and isinstance(y, float):
            assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), \
                (f"{path}.{key}", x, y)
        else:
            assert x == y, (f"{path}.{key}", x, y)


def both_cores(sc):
    """(Python engine stepping one event per step, the reference; compiled core) results of ``sc``, checked to have
    run where they should."""
    python, compiled = with_core(sc, "python", "iteration"), with_core(sc, "auto")
    assert python.summary["engine"]["core"] == "python"
    assert compiled.summary["engine"]["core"] == "compiled", compiled.summary["engine"].get("python_because")
    return python, compiled


def pool(draw, gpu: str, model: str, max_len: int) -> dict:
    engine = draw_engine(draw, max_len, draw(st.sampled_from([4, 16])), max_seqs=32, spare_blocks=150)
    engine["scheduler"] = draw(st.sampled_from(["vllm_v1", "no_evict"]))
    return {"gpu": gpu, "model": model, "replicas": draw(st.integers(1, 3)), "engine": engine,
            "perf": draw(st.sampled_from(PERF))}


@st.composite
def eligible(draw):
    """A scenario the compiled core runs: open-loop or trace arrivals, one to three static pools."""
    pools = {}
    for i in range(draw(st.integers(1, 3))):
        gpu, model = draw(st.sampled_from(GPUS))
        pools[f"p{i}"] = pool(draw, gpu, model, draw(st.integers(64, 1024)))
    longest = max(p["engine"]["max_model_len"] for p in pools.values())
    # Prompts that may exceed a pool's max_model_len (routed to a pool that holds them, or rejected).
    lengths = {"prompt_tokens": {"dist": "uniform", "low": 1, "high": draw(st.integers(1, longest + 200))},
               "output_tokens": {"dist": "uniform", "low": 1, "high": draw(st.integers(1, 300))}}
    if draw(st.booleans()):
        workload = {"type": "open_loop", "arrival": {"process": "gamma", "rate_per_s": draw(st.floats(0.5, 150)),
                                                     "cv": draw(st.floats(0.3, 3))},
                    "num_requests": draw(st.integers(1, 120)), **lengths}
    else:
        workload = {"type": "trace", "path": str(AZURE_CONV), "format": "azure",
                    "num_requests": draw(st.integers(1, 120)), "time_scale": draw(st.sampled_from([0.02, 0.2, 1.0])),
                    "start_s": draw(st.sampled_from([0.0, 300.0]))}
    patch = {"workload": workload, "pools": pools, "router": {"policy": draw(st.sampled_from(ROUTERS))},
             "seed": draw(st.integers(0, 2**32 - 1))}
    return validate_scenario(merge({k: v for k, v in scenario().model_dump(mode="json", by_alias=True).items()
                                    if k not in ("pools", "workload")}, patch), "test")


@needs_core
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(eligible())
def test_compiled_core_gives_the_python_engines_results(sc):
    python, compiled = both_cores(sc)
    assert_same(python, compiled)
    assert_summaries_agree(python.summary, compiled.summary)
    assert python.summary["engine"]["steps"] == compiled.summary["engine"]["steps"]


@needs_core
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(eligible(), st.sampled_from([4.0, 8.0, 16.0]), st.sampled_from([0.0625, 0.125]))
def test_ties_between_arrivals_and_step_ends_resolve_as_the_python_engine(sc, rate, step_s):
    """Constant arrivals on binary-fraction step ends: the order of same-time events decides who joins a step."""
    data = sc.model_dump(mode="json", by_alias=True)
    patch = {"pools": {name: {"perf": {"model": "constant", "step_s": step_s, "per_token_s": 0.0}}
                       for name in data["pools"]},
             "workload": {"type": "open_loop", "arrival": {"process": "constant", "rate_per_s": rate},
                          "num_requests": 80, "prompt_tokens": {"dist": "uniform", "low": 1, "high": 300},
                          "output_tokens": {"dist": "uniform", "low": 1, "high": 60}}}
    assert_same(*both_cores(validate_scenario(merge(data, patch), "test")))


@needs_core
@pytest.mark.parametrize("prompt", [2048, 2101, 4149])
def test_a_prompt_longer_than_the_budget_costs_what_it_does_on_the_python_engine(prompt):
    """Prefill chunks that end no prompt sample no row: the step runs no LM head on either engine (the core once
    charged the head's weight read, 0.37 ms on an H100, to each such step)."""
    sc = scenario({"pools": {"p": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "replicas": 1,
                                   "engine": {"max_num_batched_tokens": 2048, "max_model_len": 8192},
                                   "perf": {"model": "kernel"}}},
                   "workload": {"type": "open_loop", "arrival": {"process": "poisson", "rate_per_s": 1.0},
                                "num_requests": 1, "prompt_tokens": {"dist": "fixed", "tokens": prompt},
                                "output_tokens": {"dist": "fixed", "tokens": 4}}})
    python, compiled = both_cores(sc)
    assert_same(python, compiled)
    assert list(compiled.requests["status"]) == ["finished"]
    assert python.requests["ttft_s"].iloc[0] == compiled.requests["ttft_s"].iloc[0]


@needs_core
def test_quickstart_runs_on_the_compiled_core():
    from sim.scenario import load_scenario
    from tests.conftest import ROOT

    sc = load_scenario(ROOT / "configs" / "quickstart.yaml", ["workload.num_requests=300"])
    python, compiled = both_cores(sc)
    assert_same(python, compiled)
    engine = compiled.summary["engine"]
    assert engine["simpy_events"] is None and engine["core_events"] > 300 and "python_because" not in engine


@needs_core
@pytest.mark.parametrize(("patch", "because"), [
    ({"run": {"core": "python"}}, "run.core is python"),
    ({"run": {"trace_events": True}}, "run.trace_events"),
    ({"run": {"max_duration_s": 5.0}}, "run.max_duration_s"),
    ({"router": {"policy": "prefix_affinity"}}, "router prefix_affinity"),
    ({"pools": {"p": {"engine": {"stepping": "iteration"}}}}, "engine.stepping iteration"),
    ({"pools": {"p": {"engine": {"scheduler": "static"}}}}, "a scheduler other than vllm_v1 or no_evict"),
    ({"workload": {"type": "closed_loop", "clients": 2, "num_requests": 5,
                   "prompt_tokens": {"dist": "uniform", "low": 1, "high": 9},
                   "output_tokens": {"dist": "uniform", "low": 1, "high": 9}}}, "closed-loop clients"),
])
def test_what_the_core_does_not_cover_runs_on_python_and_says_why(patch, because):
    engine = simulate(scenario(patch)).summary["engine"]
    assert engine["core"] == "python" and because in engine["python_because"]
    assert engine["simpy_events"] > 0 and engine["core_events"] is None


@needs_core
def test_without_the_extension_every_run_uses_the_python_engine(monkeypatch):
    base = simulate(scenario({}))
    assert base.summary["engine"]["core"] == "compiled"
    monkeypatch.setattr(core_module, "_core", None)
    fallback = simulate(scenario({}))
    assert fallback.summary["engine"]["python_because"] == "the compiled core is not built (no C compiler at install)"
    assert_same(base, fallback)


@needs_core
@pytest.mark.parametrize("kind", [np.random.PCG64, np.random.Philox, np.random.SFC64, np.random.MT19937])
def test_the_cores_bounded_draws_are_numpys(kind):
    """Random routing draws in C from the router's own bit generator (no call back per draw): the same numbers and
    the same generator state afterwards as ``Generator.integers``."""
    bounds = [1, 2, 3, 4, 5, 9, 17, 100, 127, 1000, 2**20 + 3, 2**31 + 11, 2**32 - 2] * 40
    ours, theirs = kind(7), np.random.Generator(kind(7))
    assert core_module._core.draws(ours.capsule, bounds) == [int(theirs.integers(n)) for n in bounds]
    assert ours.random_raw() == theirs.bit_generator.random_raw()
    assert core_module._native_draws(kind)


@needs_core
def test_the_core_reports_progress_as_records_come_back(monkeypatch):
    from sim.cluster import build as build_module

    monkeypatch.setattr(build_module, "RECORD_CHUNK", 50)
    calls = []
    res = simulate(scenario({"workload": {"num_requests": 400, "arrival": {"process": "poisson", "rate_per_s": 20.0}}}),
                   progress=lambda now_s, ended, expected: calls.append((now_s, ended, expected)))
    assert res.summary["engine"]["core"] == "compiled"
    assert calls[0] == (0.0, 0, 400) and calls[-1][1] == 400 and len(calls) >= 8
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(calls))

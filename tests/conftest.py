"""Shared fixtures: small scenarios built in code, with the constant step-time model where exactness matters."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from sim.config import Scenario
from sim.scenario import validate_scenario

ROOT = Path(__file__).resolve().parent.parent
AZURE_CONV = ROOT / "data" / "traces" / "azure-2023" / "AzureLLMInferenceTrace_conv.csv"

BASE = {
    "name": "tiny",
    "workload": {
        "type": "open_loop",
        "arrival": {"process": "poisson", "rate_per_s": 2.0},
        "num_requests": 50,
        "prompt_tokens": {"dist": "uniform", "low": 10, "high": 200},
        "output_tokens": {"dist": "uniform", "low": 1, "high": 50},
    },
    "pools": {
        "p": {
            "gpu": "h100_sxm",
            "model": "llama-3.1-8b",
            "replicas": 1,
            "engine": {"max_model_len": 4096},
            "perf": {"model": "constant", "step_s": 0.01},
        }
    },
}


TAGS = ("dist", "process", "type", "model")


def _same_kind(a: dict, b: dict) -> bool:
    return all(a.get(tag, b.get(tag)) == b.get(tag, a.get(tag)) for tag in TAGS)


def merge(base: dict, patch: dict) -> dict:
    """Deep-merge ``patch`` into a copy of ``base``.

    A value of None deletes the key; a block whose kind (``dist``, ``process``, ``type``, ``model``) changes
    replaces the base block whole.
    """
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and _same_kind(out[key], value):
            out[key] = merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = merge({}, value)  # a new kind of block: taken whole, minus keys set to None
        else:
            out[key] = copy.deepcopy(value)
    return out


def scenario(patch: dict | None = None) -> Scenario:
    """A validated scenario: :data:`BASE` with ``patch`` deep-merged in."""
    return validate_scenario(merge(BASE, patch or {}), "test")


def draw_engine(draw, max_len: int, block: int, max_seqs: int, spare_blocks: int, schedulers: bool = False) -> dict:
    """A random engine block for hypothesis strategies: small KV caches and budgets that force preemption,
    chunking and admission limits; with ``schedulers``, any registered batch-formation policy."""
    from hypothesis import strategies as st

    from sim.engine.scheduler import SCHEDULERS

    chunked = draw(st.booleans())
    engine = {
        "max_model_len": max_len,
        "block_size": block,
        "max_num_seqs": draw(st.integers(1, max_seqs)),
        # With chunked prefill a budget may be below max_model_len: a long prompt then takes steps that sample
        # no row (no LM head); without it the budget must hold a whole prompt (validated).
        "max_num_batched_tokens": draw(st.integers(max(1, max_len // 4) if chunked else max_len, 2 * max_len)),
        "enable_chunked_prefill": chunked,
        "num_gpu_blocks_override": -(-max_len // block) + draw(st.integers(0, spare_blocks)),
    }
    if schedulers:
        engine["scheduler"] = draw(st.sampled_from(sorted(SCHEDULERS)))
        engine["batch_delay_s"] = draw(st.sampled_from([0.0, 0.03]))
    return engine


@pytest.fixture
def tiny_scenario() -> Scenario:
    return scenario()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)

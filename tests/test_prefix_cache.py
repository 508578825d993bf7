"""Prefix caching (sim/engine/prefix_cache.py): the LRU exactly, a hit rate computed by hand on a small trace,
synthetic shared prefixes, eviction under a small cache, and prefix-aware routing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim import simulate
from sim.engine.prefix_cache import PrefixCache
from tests.conftest import scenario


def test_lru_matches_leading_ids_and_evicts_the_least_recently_used():
    cache = PrefixCache(capacity_tokens=4 * 10)
    assert cache.admit([1, 2, 3], 10) == 0
    assert cache.admit([1, 2, 4], 10) == 2  # 1 and 2 were there; 4 is added: 1, 2, 3, 4 (full)
    assert cache.match([1, 2, 3]) == 3
    assert cache.admit([5], 10) == 0  # evicts the least recently used: 3 (1, 2, 4 were touched after it)
    assert cache.match([1, 2, 3]) == 2 and cache.match([4]) == 1 and cache.tokens == 40
    assert cache.match([9, 1]) == 0  # only a leading run counts


def mooncake(tmp_path, rows):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def run_trace(path, **pool):
    return simulate(scenario({"workload": {"type": "trace", "format": "mooncake", "path": path},
                              "pools": {"p": {"perf": {"model": "kernel"}, "engine": {"max_model_len": 8192},
                                              **pool}}}))


def test_hit_rate_on_a_small_trace_equals_the_hand_computed_value(tmp_path):
    rows = [{"timestamp": 0, "input_length": 1536, "output_length": 4, "hash_ids": [1, 2, 3]},
            {"timestamp": 1000, "input_length": 1536, "output_length": 4, "hash_ids": [1, 2, 4]},
            {"timestamp": 2000, "input_length": 300, "output_length": 4, "hash_ids": [5]},
            {"timestamp": 3000, "input_length": 1536, "output_length": 4, "hash_ids": [1, 2, 3]}]
    res = run_trace(mooncake(tmp_path, rows))
    req = res.requests
    # r1 finds ids 1, 2 (2 x 512 tokens); r3 finds all three, less the last token, which is always computed.
    assert list(req["cached_tokens"]) == [0, 1024, 0, 1535]
    assert res.summary["prefix_cache_hit_rate"] == pytest.approx((1024 + 1535) / (3 * 1536 + 300))
    # The cached prefill is skipped: the repeat gets its first token far sooner.
    assert req.loc[3, "ttft_s"] < 0.2 * req.loc[0, "ttft_s"]
    off = run_trace(mooncake(tmp_path, rows), engine={"max_model_len": 8192, "enable_prefix_caching": False})
    assert (off.requests["cached_tokens"] == 0).all()


def test_synthetic_shared_prefix_hits_whole_blocks():
    wl = {"num_requests": 40, "arrival": {"process": "constant", "rate_per_s": 1.0},
          "prompt_tokens": {"dist": "uniform", "low": 1100, "high": 2000},
          "output_tokens": {"dist": "fixed", "tokens": 8}, "shared_prefix": {"tokens": 1000, "groups": 1}}
    res = simulate(scenario({"workload": wl, "pools": {"p": {"perf": {"model": "kernel"}}}}))
    req = res.requests
    # One group: every request after the first finds the prefix's 62 whole 16-token blocks (992 tokens).
    assert req["cached_tokens"].iloc[0] == 0 and (req["cached_tokens"].iloc[1:] == 62 * 16).all()
    assert res.summary["prefix_cache_hit_rate"] == pytest.approx(39 * 992 / req["prompt_tokens"].sum())


def test_a_small_cache_evicts_and_hits_less():
    wl = {"num_requests": 200, "arrival": {"process": "constant", "rate_per_s": 4.0},
          "prompt_tokens": {"dist": "fixed", "tokens": 1200},
          "output_tokens": {"dist": "fixed", "tokens": 4}, "shared_prefix": {"tokens": 1024, "groups": 50}}
    big = simulate(scenario({"workload": wl, "pools": {"p": {"perf": {"model": "kernel"}}}}))
    small = simulate(scenario({"workload": wl, "pools": {"p": {"perf": {"model": "kernel"}, "engine": {
        "num_gpu_blocks_override": 400, "max_model_len": 4096}}}}))  # 6,400 tokens: about 6 of the 50 prefixes
    assert big.summary["prefix_cache_hit_rate"] > 2 * small.summary["prefix_cache_hit_rate"] > 0


def test_prefix_affinity_routing_keeps_a_prefix_on_one_replica():
    wl = {"num_requests": 60, "arrival": {"process": "constant", "rate_per_s": 2.0},
          "prompt_tokens": {"dist": "fixed", "tokens": 1100}, "output_tokens": {"dist": "fixed", "tokens": 4},
          "shared_prefix": {"tokens": 1024, "groups": 3}}
    pools = {"p": {"perf": {"model": "kernel"}, "replicas": 3}}
    affinity = simulate(scenario({"workload": wl, "pools": pools, "router": {"policy": "prefix_affinity"}}))
    spread = simulate(scenario({"workload": wl, "pools": pools, "router": {"policy": "round_robin"}}))
    assert affinity.summary["prefix_cache_hit_rate"] > spread.summary["prefix_cache_hit_rate"]
    hits = affinity.requests[affinity.requests["cached_tokens"] > 0]
    # Each request that hit its prefix was sent to a replica that had it: at most 3 misses (one per prefix) ...
    assert len(affinity.requests) - len(hits) <= 3 + 3  # ... plus a few while two were in flight at once
    assert np.isfinite(affinity.summary["ttft_s"]["p99"])

"""One record per request: the requests DataFrame, built once at the end of a run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sim.engine.request import Request

RECORD_COLUMNS = [
    "request_id", "class", "arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens", "pool",
    "gpu_type", "replica_id", "status", "reject_reason", "preemptions", "interruptions", "lost_s", "cached_tokens",
    "queue_s", "ttft_s",
    "tpot_s", "max_itl_s", "e2e_s", "kv_transfer_s", "prefill_pool",
]


#: The record columns the run's summary reads (kept in memory when records spill to disk).
SUMMARY_COLUMNS = ["class", "pool", "status", "preemptions", "interruptions", "lost_s", "cached_tokens",
                   "prompt_tokens", "output_tokens", "queue_s", "ttft_s", "tpot_s", "max_itl_s", "e2e_s",
                   "kv_transfer_s", "prefill_pool"]


def empty_frame(gpu_of_pool: dict[str, str], classes: Sequence[str] = ("default",)) -> pd.DataFrame:
    """A requests frame with no rows and the usual dtypes."""
    return requests_frame([], gpu_of_pool, classes)


def _opt(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def requests_frame(requests: Sequence[Request], gpu_of_pool: dict[str, str],
                   classes: Sequence[str] = ("default",)) -> pd.DataFrame:
    """The requests as a DataFrame with derived latency columns (NaN where not reached).

    ``class`` is the request's traffic class (``default`` for the scenario's ``workload``); ``queue_s`` is arrival
    to first scheduling (of its last attempt, for a restarted request); ``ttft_s`` arrival to first token; ``tpot_s``
    the mean time per output token after the first, ``(finish - first_token) / (output_tokens - 1)`` (NaN for
    one-token outputs); ``interruptions`` how often the request's replica went away under it and it restarted
    elsewhere (drain timeout, spot reclaim, failure), and ``lost_s`` the service thrown away by that (from each lost
    attempt's first scheduling to its replica going away; ``queue_s`` includes it); ``max_itl_s`` the longest gap
    between two consecutive output tokens (finished requests with two tokens or more, else NaN); ``cached_tokens``
    the prompt tokens found in the replica's prefix cache (their prefill skipped); ``e2e_s`` arrival to finish;
    ``kv_transfer_s`` (disaggregated serving) the first token on the prefill replica to the KV cache's arrival at the
    decode replica, waiting for the link included (NaN where there was no hand-off), and ``prefill_pool`` the pool
    that computed its prompt (``pool`` is then the decode pool).
    """
    arrival = np.array([r.arrival_s for r in requests], dtype=float)
    first = _opt(r.first_token_s for r in requests)
    finish = _opt(r.finish_s for r in requests)
    scheduled = _opt(r.scheduled_s for r in requests)
    output = np.array([r.output_tokens for r in requests], dtype=np.int64)
    pools = [r.pool for r in requests]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output > 1, (finish - first) / (output - 1), np.nan)
    frame = pd.DataFrame({
        "request_id": np.array([r.request_id for r in requests], dtype=np.int64),
        "class": pd.Categorical.from_codes(np.array([r.cls for r in requests], dtype=np.int64),
                                           categories=list(classes)),
        "arrival_s": arrival,
        "first_token_s": first,
        "finish_s": finish,
        "prompt_tokens": np.array([r.prompt_tokens for r in requests], dtype=np.int64),
        "output_tokens": output,
        "pool": pd.Categorical(pools, categories=list(gpu_of_pool)),
        "gpu_type": pd.Categorical([gpu_of_pool.get(p) for p in pools],
                                   categories=sorted(set(gpu_of_pool.values()))),
        "replica_id": np.array([r.replica_id for r in requests], dtype=np.int64),
        "status": pd.Categorical([r.status for r in requests], categories=["finished", "rejected", "in_flight"]),
        "reject_reason": pd.Series([r.reject_reason for r in requests], dtype="object"),
        "preemptions": np.array([r.preemptions for r in requests], dtype=np.int64),
        "interruptions": np.array([r.interruptions for r in requests], dtype=np.int64),
        "lost_s": np.array([r.lost_s for r in requests], dtype=float),
        "cached_tokens": np.array([r.cached_tokens for r in requests], dtype=np.int64),
        "queue_s": scheduled - arrival,
        "ttft_s": first - arrival,
        "tpot_s": tpot,
        "max_itl_s": np.where((output > 1) & ~np.isnan(finish),
                              np.array([r.max_itl_s for r in requests], dtype=float), np.nan),
        "e2e_s": finish - arrival,
        "kv_transfer_s": _opt(r.kv_transfer_s for r in requests),
        "prefill_pool": pd.Categorical([r.prefill_pool for r in requests], categories=list(gpu_of_pool)),
    })
    return frame[RECORD_COLUMNS]

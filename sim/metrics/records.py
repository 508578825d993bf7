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
    pools = list(gpu_of_pool)
    code = {name: i for i, name in enumerate(pools)}
    statuses = {"finished": 0, "rejected": 1, "in_flight": 2}
    return records_frame(
        request_id=np.array([r.request_id for r in requests], dtype=np.int64),
        cls=np.array([r.cls for r in requests], dtype=np.int64),
        arrival_s=np.array([r.arrival_s for r in requests], dtype=float),
        scheduled_s=_opt(r.scheduled_s for r in requests),
        first_token_s=_opt(r.first_token_s for r in requests),
        finish_s=_opt(r.finish_s for r in requests),
        prompt_tokens=np.array([r.prompt_tokens for r in requests], dtype=np.int64),
        output_tokens=np.array([r.output_tokens for r in requests], dtype=np.int64),
        pool=np.array([code.get(r.pool, -1) for r in requests], dtype=np.int64),
        replica_id=np.array([r.replica_id for r in requests], dtype=np.int64),
        status=np.array([statuses[r.status] for r in requests], dtype=np.int64),
        reject_reason=[r.reject_reason for r in requests],
        preemptions=np.array([r.preemptions for r in requests], dtype=np.int64),
        interruptions=np.array([r.interruptions for r in requests], dtype=np.int64),
        lost_s=np.array([r.lost_s for r in requests], dtype=float),
        cached_tokens=np.array([r.cached_tokens for r in requests], dtype=np.int64),
        max_itl_s=np.array([r.max_itl_s for r in requests], dtype=float),
        kv_transfer_s=_opt(r.kv_transfer_s for r in requests),
        prefill_pool=np.array([code.get(r.prefill_pool, -1) for r in requests], dtype=np.int64),
        gpu_of_pool=gpu_of_pool, classes=classes)


def records_frame(*, request_id, cls, arrival_s, scheduled_s, first_token_s, finish_s, prompt_tokens, output_tokens,
                  pool, replica_id, status, reject_reason, preemptions, interruptions, lost_s, cached_tokens,
                  max_itl_s, kv_transfer_s, prefill_pool, gpu_of_pool: dict[str, str],
                  classes: Sequence[str] = ("default",)) -> pd.DataFrame:
    """:func:`requests_frame` from columns: NaN for a time not reached, ``pool`` and ``prefill_pool`` as indices
    into ``gpu_of_pool``'s pools (-1: none), ``status`` as 0 finished, 1 rejected, 2 in flight, ``max_itl_s`` as
    the engine keeps it (the derived column is NaN where it means nothing)."""
    pools = list(gpu_of_pool)
    gpus = sorted(set(gpu_of_pool.values()))
    gpu_code = np.array([gpus.index(gpu_of_pool[p]) for p in pools] + [-1], dtype=np.int64)
    output = output_tokens
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output > 1, (finish_s - first_token_s) / (output - 1), np.nan)
    frame = pd.DataFrame({
        "request_id": request_id,
        "class": pd.Categorical.from_codes(cls, categories=list(classes)),
        "arrival_s": arrival_s,
        "first_token_s": first_token_s,
        "finish_s": finish_s,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output,
        "pool": pd.Categorical.from_codes(pool, categories=pools),
        "gpu_type": pd.Categorical.from_codes(gpu_code[pool], categories=gpus),
        "replica_id": replica_id,
        "status": pd.Categorical.from_codes(status, categories=["finished", "rejected", "in_flight"]),
        "reject_reason": pd.Series(reject_reason, dtype="object"),
        "preemptions": preemptions,
        "interruptions": interruptions,
        "lost_s": lost_s,
        "cached_tokens": cached_tokens,
        "queue_s": scheduled_s - arrival_s,
        "ttft_s": first_token_s - arrival_s,
        "tpot_s": tpot,
        "max_itl_s": np.where((output > 1) & ~np.isnan(finish_s), max_itl_s, np.nan),
        "e2e_s": finish_s - arrival_s,
        "kv_transfer_s": kv_transfer_s,
        "prefill_pool": pd.Categorical.from_codes(prefill_pool, categories=pools),
    })
    return frame[RECORD_COLUMNS]

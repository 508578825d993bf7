"""Analytic capacity of one replica: the request rate it sustains within a TPOT target, from the kernel model.

The serial model of one replica at steady state: prefills and decode steps take turns. A request's prefill takes
``t_p`` (its prompt, in chunks of the token budget); a decode step of ``B`` sequences holding their mean context
takes ``t_d(B)`` and gives each one token. At arrival rate ``lam`` prefills occupy the fraction ``lam t_p`` of the
time, so each request's ``O`` tokens take ``O t_d / (1 - lam t_p)``, and by Little's law
``B = lam O t_d / (1 - lam t_p)``, i.e. ``lam(B) = B / (O t_d(B) + B t_p)``. The time per output token is
``t_d / (1 - lam t_p)``. The capacity is the largest ``lam(B)`` over batch sizes within ``max_num_seqs``, the KV
cache (``B (P + O)`` tokens) and the TPOT target. Queueing for TTFT is not in this first cut: the planner keeps
headroom and checks the plan by simulation.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.perf.shape import BatchShape, PerfModel


@dataclass(frozen=True)
class Capacity:
    """One replica's analytic capacity for a workload of mean prompt ``P`` and output ``O`` tokens."""

    rate_rps: float  # requests per second
    batch: int  # the decoding batch at that rate
    tpot_s: float  # time per output token there
    prefill_s: float  # one request's prefill
    limited_by: str  # what stops a larger batch: max_num_seqs, kv_cache or tpot


def prefill_time_s(perf: PerfModel, prompt_tokens: int, budget: int) -> float:
    """One prompt's prefill, alone, in chunks of at most ``budget`` tokens."""
    total, done = 0.0, 0
    while done < prompt_tokens:
        chunk = min(budget, prompt_tokens - done)
        last = done + chunk == prompt_tokens
        total += perf.step_time_s(BatchShape(((done, chunk),), 0, 0, 1 if last else 0))
        done += chunk
    return total


def replica_capacity(perf: PerfModel, prompt_tokens: float, output_tokens: float, kv_tokens: int, max_num_seqs: int,
                     budget: int, tpot_target_s: float | None) -> Capacity:
    """The largest steady request rate of one replica (see the module docstring)."""
    p, o = max(1, round(prompt_tokens)), max(1.0, output_tokens)
    t_p = prefill_time_s(perf, p, budget)
    context = p + o / 2  # a decoding sequence's mean context
    best = Capacity(0.0, 0, float("nan"), t_p, "tpot")
    limit = "max_num_seqs"
    for b in range(1, max_num_seqs + 1):
        if b * (p + o) > kv_tokens:
            limit = "kv_cache"
            break
        t_d = perf.step_time_s(BatchShape((), b, int(b * context), b))
        lam = b / (o * t_d + b * t_p)
        tpot = t_d / (1 - lam * t_p)
        if tpot_target_s is not None and tpot > tpot_target_s:
            limit = "tpot"
            break
        if lam > best.rate_rps:
            best = Capacity(lam, b, tpot, t_p, limit)
    return Capacity(best.rate_rps, best.batch, best.tpot_s, t_p, limit)

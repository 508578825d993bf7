"""The compiled engine core: a whole run of a static fleet in one C loop (``sim/engine/_core.c``).

It applies the per-step reference's transitions (one event per engine step, as ``engine.stepping: iteration``)
in SimPy's order, with step prices from the same performance model (the calibrated kernel model's operators
computed in C from the constants :meth:`TransformerStepModel.kernel_spec` hands over, with the same arithmetic;
decode-attention tables and other models called back; all memoised), so its records equal the Python engine's
(tests/test_core.py holds them to 1e-9 s over random scenarios). Requests in flight live in reusable slots;
ended requests' records and the pools' change points come back a chunk at a time. It covers the
common case: open-loop or trace arrivals of one traffic class, pools of ready replicas that neither scale nor fail,
the vLLM V1 and no-evict schedulers, the calibrated kernel, roofline and constant step models, and the routers
``round_robin``, ``random``, ``least_outstanding``, ``jsq_tokens`` and ``power_of_two``. Anything else (and
``run.core: python``) runs on the Python engine; :func:`unsupported` says why, and the summary's ``engine`` block
reports it.

The extension is built at install (``setup.py``); where it could not be (no C compiler), every run uses the Python
engine, with the same results.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from sim.engine.scheduler import NoEvictScheduler, VllmV1Scheduler
from sim.errors import InternalError
from sim.metrics import timeseries
from sim.metrics.records import records_frame
from sim.perf.step import DECODE_TABLE_PER_OCTAVE, ConstantStepModel, TransformerStepModel

try:
    from sim.engine import _core
except ImportError:  # built without a C compiler: the Python engine runs everything
    _core = None

#: The routers the core implements, by their code in ``_core.c``.
ROUTER_CODES = {"round_robin": 0, "random": 1, "least_outstanding": 2, "jsq_tokens": 3, "power_of_two": 4}
_STATUS_CODES = np.array([2, 0, 1, 1])  # core status (in flight, finished, too long, no replicas) -> record code


def unsupported(scenario, fleet) -> str | None:
    """Why ``scenario`` (built as ``fleet``) runs on the Python engine, or None when the compiled core runs it."""
    if scenario.run.core == "python":
        return "run.core is python"
    if _core is None:
        return "the compiled core is not built (no C compiler at install)"
    if DECODE_TABLE_PER_OCTAVE != 64:
        return "the decode table's resolution differs from the compiled core's"
    reasons = [
        (fleet.events is not None, "run.trace_events"),
        (scenario.run.max_duration_s is not None, "run.max_duration_s"),
        (len(fleet.workload) != 1 or fleet.workload[0] is None, "closed-loop clients or traffic classes"),
        (fleet.can_scale, "replicas that come and go (autoscaling, spot, failures or maintenance)"),
        (fleet.kv_transfer is not None, "disaggregated serving"),
        (fleet.pool_rules is not None, "router rules or overflow"),
        (fleet.prefixes[0] is not None, "prefix ids"),
        (scenario.router.policy not in ROUTER_CODES, f"router {scenario.router.policy}"),
        (not fleet.replicas or len(fleet.routable) != len(fleet.replicas), "a pool without ready replicas"),
        (any(p.config.replicas < 1 for p in fleet.plans.values()), "a pool without replicas"),
    ]
    arrays = fleet.workload[0] if len(fleet.workload) == 1 else None
    if arrays is not None and len(arrays.prompt_tokens):  # the core keeps a request's token counts in 32 bits
        reasons.append((int(arrays.prompt_tokens.max()) + int(arrays.output_tokens.max()) >= 2**31,
                        "a request of 2**31 tokens or more"))
    for replica in fleet.replicas:
        reasons += [
            (not replica.fast, "engine.stepping iteration, GPU sharing or speculative decoding"),
            (type(replica.scheduler) not in (VllmV1Scheduler, NoEvictScheduler),
             "a scheduler other than vllm_v1 or no_evict"),
            (replica.by_priority, "priority scheduling"),
            (type(replica.perf) not in (TransformerStepModel, ConstantStepModel),
             "pipeline parallelism or a slowed (passed-through) GPU"),
        ]
    return next((why for bad, why in reasons if bad), None)


@cache
def _native_draws(kind: type) -> bool:
    """Whether the core's own bounded draws equal ``Generator.integers`` for bit generators of type ``kind`` (so
    random routing need not call back into Python for each draw): checked once per process, on fresh generators."""
    bounds = [1, 2, 3, 5, 7, 100, 101, 1000, 2**16 + 1, 2**31 + 11, 2**32 - 2, 6, 1, 2]
    try:
        generator = kind(20261202)  # held while the core draws from it: the capsule does not keep it alive
        ours = _core.draws(generator.capsule, bounds * 50)
        ref = np.random.Generator(kind(20261202))
        theirs = [int(ref.integers(n)) for n in bounds * 50]
    except (AttributeError, TypeError, ValueError):  # no capsule, or a generator the core cannot drive
        return False
    return ours == theirs


def _pool_settings(replica) -> tuple:
    """One pool's engine limits and step pricing, as ``_core.run`` takes them."""
    lim = replica.scheduler.limits
    perf = replica.perf
    head = (int(lim.max_num_seqs), int(lim.max_num_batched_tokens), int(lim.block_size), int(lim.total_blocks),
            int(replica.max_model_len), int(lim.enable_chunked_prefill), int(replica.scheduler.reserve_whole))
    if isinstance(perf, ConstantStepModel):
        return (*head, 1, perf.step_s, perf.per_token_s, 0.0, 0.0, 0.0, 0.0, 1.0, 0, 0, 1, None, None, None, None,
                None, None)
    return (*head, 0, 0.0, 0.0, float(perf.model.n_layers), perf.step_overhead_s, perf.per_sequence_overhead_s,
            perf._eager_s, perf.gpu_time_scale, int(perf.cudagraph_max_tokens), int(perf.overlap_host),
            int(perf._plain), perf.dense_layer_s, perf.head_s, perf.decode_table, perf.decode_attention_exact_s,
            perf.prefill_attention_s, perf.kernel_spec())


def run(fleet, router: str, record_chunk: int, progress=None, expected: int | None = None) -> tuple[float, int]:
    """Run ``fleet`` (as built, not yet started; ``router``: its policy) to its end on the compiled core; write the
    requests' records (``record_chunk`` at a time, in the order they ended, as the Python engine writes them), the
    replicas' busy time and steps and the pool change points where the Python engine would have. ``progress``
    (simulated seconds, requests ended, ``expected``) is called as each chunk of records comes back.

    Returns
    -------
    tuple
        (end of the run in seconds, events the core processed: arrivals, wake-ups and step ends).
    """
    arrays = fleet.workload[0]
    arrival_in = np.ascontiguousarray(arrays.arrival_s, dtype=np.float64)
    prompt = np.ascontiguousarray(arrays.prompt_tokens, dtype=np.int64)
    output = np.ascontiguousarray(arrays.output_tokens, dtype=np.int64)
    n = len(arrival_in)
    pools = list(fleet.plans)
    code = {name: i for i, name in enumerate(pools)}
    first = {}
    for replica in fleet.replicas:
        first.setdefault(replica.pool, replica)
    settings = [_pool_settings(first[name]) for name in pools]
    agg = np.array([fleet.monitor.aggregates(name) for name in pools], dtype=np.int64).ravel()
    rep_pool = np.array([code[r.pool] for r in fleet.replicas], dtype=np.int64)
    rng = getattr(fleet.router, "rng", None)
    steps = np.empty(len(fleet.replicas), dtype=np.int64)
    busy = np.empty(len(fleet.replicas), dtype=np.float64)
    step_end = np.empty(len(fleet.replicas), dtype=np.float64)
    shortest = min(r.max_model_len for r in fleet.replicas)
    bit_generator = getattr(rng, "bit_generator", None)
    capsule = bit_generator.capsule if bit_generator is not None and _native_draws(type(bit_generator)) else None

    def change_points(*rows: bytes) -> None:  # the pools' change points, a chunk at a time
        fleet.monitor.extend(*(np.frombuffer(b, dtype=np.float64 if i == 0 else np.int64) for i, b in enumerate(rows)))

    ended = [0]

    def records(columns: tuple[bytes, ...], now_s: float) -> None:  # ended requests, a chunk at a time
        _records(fleet, *(np.frombuffer(b, dtype=np.float64 if i in _FLOAT_COLUMNS else np.int64).copy()
                          for i, b in enumerate(columns)), prompt, output, rep_pool)  # copies: writable columns
        ended[0] += len(columns[0]) // 8
        if progress is not None:
            progress(now_s, ended[0], expected)

    done, end_s, n_order, events, rows = _core.run(
        arrival_in, prompt, output, rep_pool, settings, agg, ROUTER_CODES[router],
        (lambda k: int(rng.integers(k))) if rng is not None else None, int(fleet.longest_len), int(shortest),
        steps, busy, step_end, timeseries.ROW_CHUNK, change_points, capsule, record_chunk, records)
    if not done or n_order != n:
        raise InternalError(f"the compiled core ended with {n - n_order} of {n} requests unfinished")
    for i, replica in enumerate(fleet.replicas):
        replica.steps, replica.busy_s, replica.step_end_s = int(steps[i]), float(busy[i]), float(step_end[i])
    fleet.arrived += n
    fleet.arrivals_over = True
    # Every arrival is in the records now: let the arrays go (24 bytes a request), and the SimPy arrival process
    # that never ran, which holds them too.
    fleet.workload[0] = None
    for process in fleet.replays:
        process.close()
    fleet.done.succeed(end_s)
    change_points(*rows)
    return end_s, events


_FLOAT_COLUMNS = {1, 5, 6, 7, 8}  # of the core's record chunks: arrival, scheduled, first token, max ITL, finish


def _records(fleet, request_id: np.ndarray, arrival: np.ndarray, replica: np.ndarray, preempt: np.ndarray,
             status: np.ndarray, sched: np.ndarray, first: np.ndarray, maxitl: np.ndarray, finish: np.ndarray,
             prompt: np.ndarray, output: np.ndarray, rep_pool: np.ndarray) -> None:
    """One chunk of the core's records (requests in the order they ended) into the fleet's record store."""
    m = len(request_id)
    reason = np.full(m, None, dtype=object)
    reason[status == 2] = "exceeds_max_model_len"
    reason[status == 3] = "no_replicas"
    pool_of = np.append(rep_pool, -1)  # replica -1 (rejected): no pool
    fleet.records.add(records_frame(
        request_id=request_id, cls=np.zeros(m, dtype=np.int64), arrival_s=arrival, scheduled_s=sched,
        first_token_s=first, finish_s=finish, prompt_tokens=prompt[request_id], output_tokens=output[request_id],
        pool=pool_of[replica], replica_id=replica, status=_STATUS_CODES[status], reject_reason=reason,
        preemptions=preempt, interruptions=np.zeros(m, dtype=np.int64), lost_s=np.zeros(m),
        cached_tokens=np.zeros(m, dtype=np.int64), max_itl_s=maxitl, kv_transfer_s=np.full(m, np.nan),
        prefill_pool=np.full(m, -1, dtype=np.int64), gpu_of_pool=fleet.gpu_of_pool, classes=fleet.class_names))

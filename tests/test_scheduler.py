"""The vLLM-v1 scheduling policy as a pure function: budgets, admission order, preemption."""

from __future__ import annotations

from collections import deque

from sim.engine.request import Request
from sim.engine.scheduler import EngineLimits, VllmV1Scheduler, blocks_for
from sim.engine.state import ReplicaState, finish_step, start_step


def limits(**kw) -> EngineLimits:
    base = {"max_num_seqs": 8, "max_num_batched_tokens": 64, "block_size": 4, "enable_chunked_prefill": True}
    return EngineLimits(**{**base, **kw})


def req(i: int, prompt: int, output: int = 4) -> Request:
    return Request(request_id=i, arrival_s=0.0, prompt_tokens=prompt, output_tokens=output)


def test_blocks_for_rounds_up():
    assert [blocks_for(t, 4) for t in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]


def test_plan_does_not_mutate():
    r = req(0, 10)
    waiting = deque([r])
    plan = VllmV1Scheduler(limits()).plan([], waiting, free_blocks=100)
    assert plan.admitted == (r,)
    assert (r.computed_tokens, r.kv_blocks, len(waiting)) == (0, 0, 1)


def test_chunked_prefill_splits_prompt_by_budget():
    sched = VllmV1Scheduler(limits(max_num_batched_tokens=8))
    state = ReplicaState(total_blocks=100, block_size=4)
    r = req(0, prompt=20, output=2)
    state.waiting.append(r)
    chunks = []
    for step in range(4):
        plan = sched.plan(state.running, state.waiting, state.free_blocks)
        start_step(state, plan, float(step))
        chunks.append([(x.request_id, n) for x, n in plan.scheduled])
        finish_step(state, plan, float(step) + 1)
    # 8 + 8 + 4 prompt tokens, the last chunk samples token 1; then one decode finishes the request.
    assert chunks == [[(0, 8)], [(0, 8)], [(0, 4)], [(0, 1)]]
    assert r.first_token_s == 3.0 and r.finish_s == 4.0
    assert state.free_blocks == 100 and not state.running


def test_running_decodes_come_before_new_prefills_and_budget_is_shared():
    sched = VllmV1Scheduler(limits(max_num_batched_tokens=10))
    a, b = req(0, 4, output=5), req(1, 30)
    state = ReplicaState(total_blocks=100, block_size=4)
    state.waiting.append(a)
    plan = sched.plan(state.running, state.waiting, state.free_blocks)
    start_step(state, plan, 0.0)
    finish_step(state, plan, 1.0)
    state.waiting.append(b)
    plan = sched.plan(state.running, state.waiting, state.free_blocks)
    assert [(x.request_id, n) for x, n in plan.scheduled] == [(0, 1), (1, 9)]
    assert plan.shape.n_decodes == 1 and plan.shape.prefill_chunks == ((0, 9),)


def test_without_chunked_prefill_a_long_prompt_waits_for_a_step_with_room():
    sched = VllmV1Scheduler(limits(max_num_batched_tokens=16, enable_chunked_prefill=False))
    state = ReplicaState(total_blocks=100, block_size=4)
    a, b = req(0, 4, output=3), req(1, 14)
    state.waiting.extend([a])
    plan = sched.plan(state.running, state.waiting, state.free_blocks)
    start_step(state, plan, 0.0)
    finish_step(state, plan, 1.0)
    state.waiting.append(b)
    plan = sched.plan(state.running, state.waiting, state.free_blocks)
    # a's decode takes 1 token; b's 14-token prompt fits in the 15 left, whole.
    assert [(x.request_id, n) for x, n in plan.scheduled] == [(0, 1), (1, 14)]
    sched_small = VllmV1Scheduler(limits(max_num_batched_tokens=14, enable_chunked_prefill=False))
    plan = sched_small.plan(state.running, state.waiting, state.free_blocks)
    assert [(x.request_id, n) for x, n in plan.scheduled] == [(0, 1)]


def test_max_num_seqs_caps_admission():
    sched = VllmV1Scheduler(limits(max_num_seqs=2))
    waiting = deque(req(i, 4) for i in range(5))
    plan = sched.plan([], waiting, 100)
    assert [r.request_id for r in plan.admitted] == [0, 1]


def test_admission_is_fcfs_without_skipping():
    # Request 0 needs 3 blocks, only 2 free: request 1 (1 block) must not jump ahead.
    sched = VllmV1Scheduler(limits())
    waiting = deque([req(0, 12), req(1, 4)])
    plan = sched.plan([], waiting, free_blocks=2)
    assert plan.scheduled == () and plan.admitted == ()


def test_preemption_takes_the_most_recently_admitted_and_requeues_it_first():
    sched = VllmV1Scheduler(limits(block_size=4))
    state = ReplicaState(total_blocks=6, block_size=4)
    a, b, c = req(0, 8, output=10), req(1, 4, output=10), req(2, 4, output=10)
    state.waiting.extend([a, b, c])
    plan = sched.plan(state.running, state.waiting, state.free_blocks)
    start_step(state, plan, 0.0)
    finish_step(state, plan, 1.0)
    assert state.free_blocks == 2  # 2 + 1 + 1 blocks used
    # Decodes: a has 9 known tokens (needs a 3rd block), b and c 5 (each a 2nd block): 3 needed, 2 free.
    plan = sched.plan(state.running, state.waiting, state.free_blocks)
    assert [r.request_id for r in plan.preempted] == [2]
    assert [(x.request_id, n) for x, n in plan.scheduled] == [(0, 1), (1, 1)]
    assert plan.admitted == ()  # no admissions in a step that preempted
    start_step(state, plan, 1.0)
    assert list(state.waiting) == [c] and c.computed_tokens == 0 and c.preemptions == 1
    assert c.generated_tokens == 1  # kept: it is recomputed with the prompt


def test_preempted_request_recomputes_prompt_and_generated_tokens():
    sched = VllmV1Scheduler(limits())
    r = req(0, 8, output=5)
    r.generated_tokens = 3
    r.preemptions = 1
    plan = sched.plan([], deque([r]), 100)
    assert plan.scheduled == ((r, 11),)
    assert plan.shape.n_sampled == 1


def test_a_request_that_cannot_grow_preempts_itself_when_alone_at_the_end():
    sched = VllmV1Scheduler(limits(block_size=4))
    a = req(0, 4, output=10)
    a.computed_tokens, a.generated_tokens, a.kv_blocks = 4, 1, 1
    b = req(1, 4, output=10)
    b.computed_tokens, b.generated_tokens, b.kv_blocks = 3, 1, 1  # needs nothing new
    plan = sched.plan([b, a], deque(), free_blocks=0)
    # b fits in its block; a needs a 2nd block, none free: a is the last running request and preempts itself.
    assert [x.request_id for x, _ in plan.scheduled] == [1]
    assert plan.preempted == (a,)


def test_plan_shape_is_the_batch_shape_of_its_schedule(monkeypatch):
    """plan() accumulates the batch shape while it schedules; it must equal batch_shape() of the schedule,
    whatever the mix of decodes, chunks, admissions and preemptions (small KV caches force all of them)."""
    from sim import simulate
    from sim.engine import scheduler as sched_module
    from tests.conftest import scenario

    original = sched_module.VllmV1Scheduler.plan
    checked = []

    def plan(self, running, waiting, free_blocks, group=None):
        out = original(self, running, waiting, free_blocks, group)
        assert group is None  # per-step stepping: every request is listed
        assert out.shape == sched_module.batch_shape(out.scheduled)
        checked.append(bool(out.preempted))
        return out

    monkeypatch.setattr(sched_module.VllmV1Scheduler, "plan", plan)
    for seed, blocks in ((0, 40), (1, 60), (2, 400)):
        simulate(scenario({
            "workload": {"num_requests": 60, "arrival": {"rate_per_s": 50.0},
                         "prompt_tokens": {"dist": "uniform", "low": 1, "high": 300},
                         "output_tokens": {"dist": "uniform", "low": 1, "high": 80}},
            "pools": {"p": {"engine": {"max_model_len": 512, "max_num_batched_tokens": 600, "block_size": 16,
                                       "num_gpu_blocks_override": blocks, "max_num_seqs": 12,
                                       "stepping": "iteration"}}}}), seed=seed)
    assert len(checked) > 100 and any(checked)  # many plans, some with preemptions

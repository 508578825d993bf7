"""The decode group's aggregates against brute force (sim/engine/group.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine.group import DecodeGroup, decode_ready
from sim.engine.request import Request


def decoding(i: int, prompt: int, generated: int, output: int, block: int) -> Request:
    req = Request(i, 0.0, prompt, output)
    req.generated_tokens = generated
    req.computed_tokens = prompt + generated - 1
    req.kv_blocks = -(-req.computed_tokens // block)
    return req


@settings(max_examples=200, deadline=None)
@given(block=st.sampled_from([1, 4, 16]), members=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 50),
                                                                      st.integers(1, 200)), min_size=1, max_size=12),
       runs=st.lists(st.lists(st.floats(1e-3, 1.0), min_size=1, max_size=20), min_size=1, max_size=6))
def test_group_matches_per_request_counters(block, members, runs):
    group = DecodeGroup(block)
    reqs = []
    for i, (prompt, generated, extra) in enumerate(members):
        req = decoding(i, prompt, generated, generated + extra, block)
        assert decode_ready(req)
        group.join(req)
        reqs.append(req)
    # Shadow copies advanced one step at a time, as per-step stepping would.
    shadow = {r.request_id: [r.computed_tokens, r.generated_tokens, r.kv_blocks, 0.0] for r in reqs}
    live = list(reqs)
    now = 0.0
    for durations in runs:
        if not live:
            break
        steps = min(len(durations), group.steps_to_first_finish())
        durations = durations[:steps]
        # Blocks the group says it will allocate, against the sum over members.
        brute = sum(-(-(shadow[r.request_id][0] + steps) // block) - shadow[r.request_id][2] for r in live)
        assert group.new_blocks(steps) == brute
        assert group.kv_tokens() == sum(shadow[r.request_id][0] for r in live)
        for d in durations:
            now += d
            for r in live:
                s = shadow[r.request_id]
                s[0] += 1
                s[1] += 1
                s[2] = -(-s[0] // block)
                s[3] = max(s[3], d)
        finished = group.advance(durations, now)
        assert {r.request_id for r in finished} == {
            r.request_id for r in live if shadow[r.request_id][1] >= r.output_tokens}
        live = [r for r in live if r not in finished]
        assert group.size == len(live)
    group.dissolve(live)
    for r in reqs:
        c, g, kv, itl = shadow[r.request_id]
        assert (r.computed_tokens, r.generated_tokens, r.kv_blocks) == (c, g, kv)
        assert r.max_itl_s == itl

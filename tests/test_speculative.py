"""Speculative decoding: tokens per step against the closed form for Bernoulli acceptance, and its cost."""

from __future__ import annotations

import pytest

from sim import simulate
from tests.conftest import scenario


def run(speculative=None, **engine):
    wl = {"num_requests": 30, "arrival": {"process": "constant", "rate_per_s": 0.5},
          "prompt_tokens": {"dist": "fixed", "tokens": 200}, "output_tokens": {"dist": "fixed", "tokens": 1500}}
    eng = {"max_model_len": 4096, **engine}
    if speculative is not None:
        eng["speculative"] = speculative
    return simulate(scenario({"workload": wl, "pools": {"p": {"perf": {"model": "kernel"}, "engine": eng}},
                              "run": {"trace_events": True}}))


@pytest.mark.parametrize(("k", "alpha"), [(4, 0.7), (2, 0.5), (6, 0.9)])
def test_tokens_per_decode_step_match_the_closed_form(k, alpha):
    res = run({"num_tokens": k, "acceptance_rate": alpha, "draft_step_s": 0.0})
    steps = sum(1 for _, _, kind, _ in res.events if kind == "decode")
    tokens = int((res.requests["output_tokens"] - 1).sum())  # the first token comes from the prefill
    expected = (1 - alpha ** (k + 1)) / (1 - alpha)
    # 30 requests x ~1500 tokens: thousands of steps; the last step of each request may be cut by its output cap.
    assert tokens / steps == pytest.approx(expected, rel=0.03)


def test_speculation_speeds_up_decoding_and_a_draft_model_costs_time():
    plain = run()
    free = run({"num_tokens": 4, "acceptance_rate": 0.8, "draft_step_s": 0.0})
    drafted = run({"num_tokens": 4, "acceptance_rate": 0.8, "draft_model": "llama-3.2-1b"})
    tpot = {name: r.summary["tpot_s"]["mean"] for name, r in (("plain", plain), ("free", free), ("draft", drafted))}
    assert tpot["free"] < 0.5 * tpot["plain"]  # ~3.4 tokens per step for a slightly dearer verify pass
    assert tpot["free"] < tpot["draft"] < tpot["plain"]
    assert (free.requests["status"] == "finished").all()


def test_unknown_draft_model_is_an_error():
    from sim.errors import ScenarioError

    with pytest.raises(ScenarioError, match=r"engine\.speculative\.draft_model.*unknown model 'tiny'"):
        run({"num_tokens": 4, "acceptance_rate": 0.8, "draft_model": "tiny"})

"""Capacity-review figures (sim/review.py): physical bounds, the KV arithmetic, and the claims' verdicts."""

from __future__ import annotations

import pytest

from sim.catalog import load_catalog
from sim.engine.sizing import weight_bytes
from sim.review import CLAIMS, TOLERANCE, Claim, check_claims, deployment_figures


@pytest.mark.parametrize(("model", "gpu", "precision"), [
    ("llama-2-7b", "l4", "bf16"), ("llama-2-7b", "h100_sxm", "bf16"), ("llama-2-13b", "l4", "int4"),
    ("llama-2-13b", "rtx_4090", "int4")])
def test_single_stream_is_bounded_by_reading_the_weights(model, gpu, precision):
    f = deployment_figures(model, gpu, precision)
    cat = load_catalog()
    spec = cat.gpus[gpu]
    bound = spec.memory_bandwidth_gb_s * 1e9 * f["tensor_parallel"] / weight_bytes(cat.models[model], precision)
    assert 0.4 * bound < f["single_stream_tok_s"] < bound
    assert f["max_batch"] == min(256, f["kv_tokens"] // (512 + 256))
    assert f["peak_tok_s_per_gpu"] >= f["slo_tok_s_per_gpu"] > 0
    assert f["usd_per_m_tokens"] == pytest.approx(f["usd_per_gpu_hour"] / (f["slo_tok_s_per_gpu"] * 3600) * 1e6)


def test_a_model_that_cannot_fit_says_so():
    assert deployment_figures("llama-2-70b", "t4", "bf16") == {"model": "llama-2-70b", "gpu": "t4",
                                                                  "precision": "bf16", "fits": False}


def test_every_claim_gets_a_verdict_and_a_reason():
    table = check_claims()
    assert len(table) == len(CLAIMS)
    assert set(table["verdict"]) <= {"consistent", "conservative", "optimistic", "does not fit"}
    assert (table["plausible"] == table["verdict"].isin(["consistent", "conservative"])).all()
    assert table["why"].str.len().gt(10).all()
    # The batch claim is the KV arithmetic: 13B INT4 on an L4 holds this many 768-token requests.
    batch = table[table["claim"].str.contains("batch 8")].iloc[0]
    assert batch["simulated"] == deployment_figures("llama-2-13b", "l4", "int4")["max_batch"]


def test_verdict_thresholds():
    f = deployment_figures("llama-2-7b", "h100_sxm", "bf16")
    value = f["peak_tok_s_per_gpu"]
    def verdict(low, high):
        claim = Claim("c", "llama-2-7b", "h100_sxm", "bf16", "peak_tok_s_per_gpu", low, high, "r")
        return check_claims((claim,)).iloc[0]["verdict"]
    assert verdict(value, value) == "consistent"
    assert verdict(value * TOLERANCE * 1.01, value * TOLERANCE * 1.01) == "optimistic"
    assert verdict(value / TOLERANCE / 1.01, value / TOLERANCE / 1.01) == "conservative"

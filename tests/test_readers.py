"""Trace readers beyond Azure 2023 (Azure 2024 stamps, Mooncake, BurstGPT, generic CSV/Parquet), on samples and on
broken rows, and the trace transforms (spread, rate scaling, splicing)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim import simulate
from sim.errors import TraceError
from sim.workload.readers import read_burstgpt, read_mooncake, read_table
from sim.workload.traces import read_azure_csv
from sim.workload.transforms import scale_rate, splice, spread
from tests.conftest import ROOT, scenario

MOONCAKE = ROOT / "data" / "traces" / "mooncake" / "conversation_trace_first2000.jsonl"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_azure_2024_stamps_with_utc_offsets_and_mixed_precision(tmp_path):
    path = write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2024-05-12 00:00:00+00:00,100,10\n2024-05-12 00:00:00.001163+00:00,200,20\n"
                 "2024-05-12 00:00:01.5+00:00,300,30\n")
    arrays = read_azure_csv(path)
    np.testing.assert_allclose(arrays.arrival_s, [0.0, 0.001163, 1.5])


def test_mooncake_sample_reads_with_its_prefix_blocks():
    arrays = read_mooncake(MOONCAKE)
    assert len(arrays) == 2000 and arrays.prefix_blocks is not None
    assert arrays.prompt_tokens[0] == 6758 and arrays.output_tokens[0] == 500
    assert arrays.prefix_blocks[0] == tuple(range(14))
    # 512-token blocks: a request's blocks cover its prompt.
    assert all(len(b) == -(-p // 512) for b, p in zip(arrays.prefix_blocks[:200], arrays.prompt_tokens[:200],
                                                      strict=True))
    gaps = np.diff(arrays.arrival_s)
    assert (gaps == 0).mean() > 0.8  # bucketed timestamps: most gaps are zero


@pytest.mark.parametrize(("text", "line", "message"), [
    ('{"timestamp": 0, "input_length": 10, "output_length": 5}\n{"timestamp": 1000, "input_length": "x", '
     '"output_length": 5}\n', 2, "input_length must be an integer"),
    ('{"timestamp": 5000, "input_length": 10, "output_length": 5}\n{"timestamp": 1000, "input_length": 10, '
     '"output_length": 5}\n', 2, "goes backwards"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 5}\nnot json\n', 2, "not valid JSON"),
    ('{"timestamp": 0, "input_length": 10}\n', 1, "missing 'output_length'"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 0}\n', 1, "output_length must be >= 1"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 3, "hash_ids": [1, "a"]}\n', 1, "hash_ids"),
])
def test_mooncake_bad_rows_name_their_line(tmp_path, text, line, message):
    with pytest.raises(TraceError, match=message) as err:
        read_mooncake(write(tmp_path, "m.jsonl", text))
    assert err.value.line == line


BURST_HEADER = "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def test_burstgpt_leaves_out_failed_requests(tmp_path):
    path = write(tmp_path, "b.csv", BURST_HEADER + "5,1,2.0,ChatGPT,100,50,150,Conversation log\n"
                 "7,2,0.0,GPT-4,80,0,80,API log\n9,3,3.0,ChatGPT,20,10,30,Conversation log\n")
    arrays = read_burstgpt(path)
    np.testing.assert_array_equal(arrays.arrival_s, [0.0, 4.0])
    np.testing.assert_array_equal(arrays.output_tokens, [50, 10])
    with pytest.raises(TraceError, match="Response tokens must be an integer") as err:
        read_burstgpt(write(tmp_path, "c.csv", BURST_HEADER + "5,1,2.0,ChatGPT,100,lots,150,Conversation log\n"))
    assert err.value.line == 2
    with pytest.raises(TraceError, match="header lacks Timestamp"):
        read_burstgpt(write(tmp_path, "d.csv", "time,a\n1,2\n"))


def test_generic_csv_and_parquet_with_named_columns(tmp_path):
    frame = pd.DataFrame({"t_ms": [1000, 1500, 4000], "in": [10, 20, 30], "out": [1, 2, 3]})
    frame.to_csv(tmp_path / "g.csv", index=False)
    frame.to_parquet(tmp_path / "g.parquet")
    columns = {"arrival": "t_ms", "prompt_tokens": "in", "output_tokens": "out"}
    for name in ("g.csv", "g.parquet"):
        arrays = read_table(tmp_path / name, columns, "ms")
        np.testing.assert_allclose(arrays.arrival_s, [0.0, 0.5, 3.0])
    with pytest.raises(TraceError, match="no column 'arrival_s'"):
        read_table(tmp_path / "g.csv", {**columns, "arrival": "arrival_s"})
    bad = frame.assign(out=[1, -2, 3])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(TraceError, match="out must be >= 1") as err:
        read_table(tmp_path / "bad.csv", columns, "ms")
    assert err.value.line == 3  # the header is line 1


def test_rate_scaling_keeps_lengths_and_scales_counts():
    base = read_azure_csv(ROOT / "data" / "traces" / "azure-2023" / "AzureLLMInferenceTrace_conv.csv")
    rng = np.random.default_rng(0)
    for factor in (0.5, 2.0, 2.5):
        scaled = scale_rate(base, factor, rng)
        n, m = len(base), len(scaled)
        sd = np.sqrt(n * (factor % 1) * (1 - factor % 1)) if factor % 1 else 0.0
        assert abs(m - factor * n) <= 4 * sd + 1
        assert scaled.arrival_s[-1] <= base.arrival_s[-1] + 1e-9 and (np.diff(scaled.arrival_s) >= 0).all()
        for column in ("prompt_tokens", "output_tokens"):
            a, b = getattr(base, column), getattr(scaled, column)
            assert np.median(b) == pytest.approx(np.median(a), rel=0.05)
            assert np.percentile(b, 90) == pytest.approx(np.percentile(a, 90), rel=0.05)


def test_spread_and_splice():
    arrays = read_mooncake(MOONCAKE)
    spread_out = spread(arrays, 3.0, np.random.default_rng(1))
    assert (np.diff(spread_out.arrival_s) == 0).mean() < 0.01 and len(spread_out) == len(arrays)
    assert sorted(spread_out.prompt_tokens) == sorted(arrays.prompt_tokens)
    two = splice([arrays, arrays], gap_s=10.0)
    assert len(two) == 2 * len(arrays)
    assert two.arrival_s[len(arrays)] == pytest.approx(arrays.arrival_s[-1] + 10.0)
    assert two.prefix_blocks[len(arrays)] == arrays.prefix_blocks[0]


def test_a_mooncake_replay_runs_with_spread_and_rate_scaling():
    res = simulate(scenario({"workload": {"type": "trace", "format": "mooncake", "path": str(MOONCAKE),
                                          "duration_s": 120, "spread_s": 3.0, "rate_scale": 0.5},
                             "pools": {"p": {"engine": {"max_model_len": 131072}, "replicas": 2}}}))
    s = res.summary["requests"]
    assert s["finished"] == s["arrived"] > 0

"""Bad or unusual workload input: ServeGen clients and windows, fitted traffic past a trace's end, Parquet nullable
integer columns and row numbers, and CSV line numbers across blank lines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from sim import simulate
from sim.cli import main
from sim.config import FittedWorkload
from sim.errors import ScenarioError, TraceError
from sim.rng import Streams
from sim.workload.readers import read_table
from sim.workload.source import fitted_arrays
from sim.workload.traces import read_trace
from tests.conftest import AZURE_CONV, ROOT, scenario

SERVEGEN = ROOT / "data" / "traces" / "servegen" / "deepseek-r1"
MOONCAKE = ROOT / "data" / "traces" / "mooncake" / "conversation_trace_first2000.jsonl"
SERVEGEN_SCENARIO = {
    "name": "servegen",
    "workload": {"type": "servegen", "path": str(SERVEGEN), "start_s": 43200, "duration_s": 60, "rate_scale": 0.05},
    "pools": {"p": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "precision": "fp8", "replicas": 1,
                    "engine": {"max_model_len": 8192}}},
}
COLUMNS = {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}


def servegen(**workload):
    return scenario({"workload": {**SERVEGEN_SCENARIO["workload"], **workload},
                     "pools": {"p": {"replicas": 1, "engine": {"max_model_len": 32768}}}})


def cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip()


# ------------------------------------------------------------------------------------------------- ServeGen


def test_servegen_clients_must_name_at_least_one(tmp_path, capsys):
    with pytest.raises(ScenarioError, match=r"workload\.clients: needs at least 1 entry"):
        servegen(clients=[])
    path = tmp_path / "sg.yaml"
    path.write_text(yaml.safe_dump(SERVEGEN_SCENARIO))
    rc, err = cli(capsys, "validate", path, "--set", "workload.clients=[]")
    assert rc == 2 and err.count("\n") == 0
    assert err.startswith("fleetsim: error: ") and "workload.clients: needs at least 1 entry" in err


def test_servegen_window_without_traffic_is_an_error_naming_the_folder(tmp_path, capsys):
    assert simulate(servegen(clients=["48"]), seed=0).summary["requests"]["arrived"] > 0
    # Found when the scenario is validated (so by fleetsim validate too), naming the field and the folder.
    with pytest.raises(ScenarioError, match=r"start_s=1e\+07 s lasting duration_s=60 s holds no request") as err:
        servegen(start_s=1e7)
    assert err.value.field == "workload.start_s" and f"{SERVEGEN}: " in str(err.value)
    assert "between 0 s and" in str(err.value)
    # Client 12 sends nothing in its first hours: a window there is as empty as one past the end.
    with pytest.raises(ScenarioError, match=r"holds no request \(the clients send requests between 66000 s and"):
        servegen(start_s=0, clients=["12"])
    path = tmp_path / "sg.yaml"
    path.write_text(yaml.safe_dump(SERVEGEN_SCENARIO))
    for command in ("run", "validate"):
        rc, err = cli(capsys, command, path, "--set", "workload.start_s=1e7")
        assert rc == 2 and err.count("\n") == 0
        assert err.startswith(f"fleetsim: error: --set workload.start_s=1e7: workload.start_s: {SERVEGEN}: the window")


# ------------------------------------------------------------------------------------------------- fitted


def azure(tmp_path, name: str, stamps: list[str]) -> str:
    rows = "".join(f"2023-11-16 18:15:{s},{100 * (i + 1)},{10 * (i + 1)}\n" for i, s in enumerate(stamps))
    path = tmp_path / name
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows)
    return str(path)


@pytest.mark.parametrize("seed", range(5))
def test_fitted_arrivals_of_a_short_trace_stop_at_its_end(tmp_path, seed):
    # Two requests 0.05 s apart: the one window's rate is over those 0.05 s, and so are its arrivals (not 600 s).
    path = azure(tmp_path, "two.csv", ["46.00", "46.05"])
    arrays = fitted_arrays(FittedWorkload(path=path, window_s=600, rate_scale=1), Streams(seed))
    assert len(arrays) < 20
    assert (arrays.arrival_s <= 0.05 + 1e-9).all()
    assert set(arrays.prompt_tokens) <= {100, 200}


def test_fitted_arrivals_of_a_trace_ending_on_a_window_edge_keep_its_last_request(tmp_path):
    # The last request, at 30 s exactly, belongs to the last window (a window from 30 s on would have no span to take
    # a rate over). A window's arrivals start at a random phase within the first gap, which adds half an arrival on
    # average: 2.5 (1.5 if the last request were lost).
    path = azure(tmp_path, "edge.csv", ["00.00", "30.00"])
    counts = [len(fitted_arrays(FittedWorkload(path=path, window_s=30), Streams(seed))) for seed in range(200)]
    assert np.mean(counts) == pytest.approx(2.5, abs=0.25)
    assert max(fitted_arrays(FittedWorkload(path=path, window_s=30), Streams(0)).arrival_s) <= 30


@pytest.mark.parametrize(("path", "fmt"), [(AZURE_CONV, "azure"), (MOONCAKE, "mooncake")])
def test_fitted_arrivals_of_a_shipped_trace_end_by_its_last_request(path, fmt):
    trace = read_trace(fmt, path)
    arrays = fitted_arrays(FittedWorkload(path=str(path), format=fmt, window_s=600), Streams(0))
    assert arrays.arrival_s[-1] <= trace.arrival_s[-1]
    assert abs(len(arrays) - len(trace)) < 5 * np.sqrt(len(trace)) * 3  # bursts make counts vary more than Poisson


def test_fitted_trace_at_one_instant_is_an_error(tmp_path):
    path = azure(tmp_path, "one.csv", ["46.00", "46.00"])
    with pytest.raises(TraceError, match="all 2 requests arrive at the same time"):
        fitted_arrays(FittedWorkload(path=path), Streams(0))


# ------------------------------------------------------------------------------------------------- Parquet


def test_parquet_nullable_integer_columns_are_read(tmp_path):
    path = tmp_path / "int64ext.parquet"
    pd.DataFrame({"t": [0.0, 1.0], "p": pd.array([100, 200], dtype="Int64"), "o": [10, 20]}).to_parquet(path)
    arrays = read_table(path, COLUMNS)
    np.testing.assert_array_equal(arrays.prompt_tokens, [100, 200])
    res = simulate(scenario({"workload": {"type": "trace", "format": "parquet", "path": str(path),
                                          "columns": COLUMNS}}), seed=0)
    assert res.summary["requests"]["arrived"] == 2


@pytest.mark.parametrize(("frame", "message"), [
    ({"t": [0.0, 1.0], "p": pd.array([-1, 200], dtype="Int64"), "o": [10, 20]}, ":1: p must be >= 1, got -1"),
    ({"t": [0.0, 1.0], "p": pd.array([None, 200], dtype="Int64"), "o": [10, 20]}, ":1: p is empty"),
    ({"t": pd.array([0, -1], dtype="Int64"), "p": [1, 2], "o": [1, 2]},
     ":2: t must be a finite number >= 0, got -1"),
    ({"t": [0.0, 1.0], "p": [1, 2], "o": pd.array([True, False], dtype="boolean")},
     ":1: o must be an integer, got true"),
    ({"t": [0.0, 1.0], "p": [1, 2], "o": np.array([1.5, 2.0], dtype=np.float32)},
     ":1: o must be an integer, got 1.5"),
])
def test_parquet_errors_name_the_row_from_1_and_show_plain_values(tmp_path, frame, message):
    path = tmp_path / "bad.parquet"
    pd.DataFrame(frame).to_parquet(path)
    with pytest.raises(TraceError) as err:
        read_table(path, COLUMNS)
    assert str(err.value) == f"{path}{message}"
    assert err.value.line == int(message.split(":")[1])
    assert "np." not in str(err.value)


# ------------------------------------------------------------------------------------------------- CSV lines


@pytest.mark.parametrize(("text", "line"), [
    ("t,p,o\n0,100,10\n\n\n1,200,-20\n", 5),  # blank lines, which pandas skips
    ("t,p,o\r\n0,100,10\r\n   \r\n\t\r\n1,200,-20\r\n", 5),  # whitespace-only lines, CRLF
    ('t,p,o\n"0\n",100,10\n\n1,200,-20\n', 5),  # a quoted field over two lines
    ("\n\nt,p,o\n0,100,10\n1,200,-20\n", 5),  # blank lines before the header
    ("t,p,o\n0,100,10\n1,200,-20\n", 3),
])
def test_csv_errors_name_the_files_own_line(tmp_path, text, line):
    path = tmp_path / "g.csv"
    path.write_bytes(text.encode())
    with pytest.raises(TraceError) as err:
        read_table(path, COLUMNS)
    assert str(err.value) == f"{path}:{line}: o must be >= 1, got -20"
    assert err.value.line == line


def test_csv_with_blank_lines_reads_every_row_and_names_the_header_line(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("t,p,o\n0,100,10\n\n\n1,200,20\n\n")
    np.testing.assert_array_equal(read_table(path, COLUMNS).output_tokens, [10, 20])
    path.write_text("\n\nt,p\n0,100\n")
    with pytest.raises(TraceError, match=r"g\.csv:3: no column 'o'; the file has t, p"):
        read_table(path, COLUMNS)


def test_a_csv_header_naming_a_mapped_column_twice_is_an_error(tmp_path):
    """pandas would rename the second ``t`` to ``t.1`` and read the first, silently."""
    path = tmp_path / "dup.csv"
    path.write_text("t,p,o,t\n0,100,10,5\n1,200,20,6\n")
    with pytest.raises(TraceError, match=r"dup\.csv:1: column 't' is named more than once in the header"):
        read_table(path, {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"})
    other = tmp_path / "other.csv"  # a repeated column the trace does not use is no concern of ours
    other.write_text("a,a,t,p,o\n1,2,0,100,10\n")
    assert len(read_table(other, {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"})) == 1


def test_a_mooncake_timestamp_of_true_is_not_one_millisecond(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"timestamp": true, "input_length": 10, "output_length": 5}\n')
    with pytest.raises(TraceError, match=r"m\.jsonl:1: timestamp must be a number, got true"):
        read_trace("mooncake", path)


def test_a_repeated_header_name_is_found_behind_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefft,p,t\n0,100,1\n".encode())
    with pytest.raises(TraceError, match=r"column 't' is named more than once"):
        read_table(path, {"arrival": "t", "prompt_tokens": "p", "output_tokens": "t"})


def test_a_trace_ending_on_a_rounded_window_edge_loses_no_request():
    """3 x 0.1 is 0.30000000000000004: arange's fourth start equals the end and made a window of no length."""
    from sim.workload.synthesis import expected_arrivals, fit_trace
    from sim.workload.traces import TraceArrays

    times = np.array([0, .05, .1, .15, .2, .25, 3 * 0.1])
    w = fit_trace(TraceArrays(times, np.full(7, 10), np.full(7, 5)), 0.1)
    assert len(w.start_s) == 3 and expected_arrivals(w, 0.0, 1.0) == pytest.approx(7)

"""Long runs keep bounded memory: records spill to Parquet parts past ``run.spill_after_requests``, and every
figure is the same as when they stay in memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sim import simulate
from sim.cluster import build as build_module
from sim.metrics import store as store_module
from sim.metrics import timeseries as timeseries_module
from tests.conftest import scenario

PATCH = {
    "workload": {"arrival": {"process": "poisson", "rate_per_s": 40.0}, "num_requests": 600},
    "pools": {"p": {"replicas": 2}},
}


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 50 records and 40 change points, so that a small run spills many parts."""
    monkeypatch.setattr(build_module, "RECORD_CHUNK", 50)
    monkeypatch.setattr(timeseries_module, "ROW_CHUNK", 40)


def test_spilled_run_equals_the_in_memory_run(small_chunks, tmp_path):
    base = simulate(scenario(PATCH))
    spilled = simulate(scenario({**PATCH, "run": {"spill_after_requests": 120}}), spill_dir=tmp_path)
    assert base.requests_parts == () and base.requests_in_memory is not None
    assert spilled.requests_in_memory is None and len(spilled.requests_parts) > 5
    assert all(p.parent == tmp_path / "requests" for p in spilled.requests_parts)
    assert spilled.timeseries_in_memory is None and spilled.timeseries_parts
    pd.testing.assert_frame_equal(base.requests, spilled.requests)
    pd.testing.assert_frame_equal(base.timeseries, spilled.timeseries)
    drop = ("engine",)
    assert {k: v for k, v in base.summary.items() if k not in drop} == {
        k: v for k, v in spilled.summary.items() if k not in drop}
    assert spilled.summary["engine"]["records_spilled_to"] == str(tmp_path / "requests")


def test_records_are_in_arrival_order_with_in_flight_ones(small_chunks):
    res = simulate(scenario({**PATCH, "run": {"max_duration_s": 5.0}}))
    df = res.requests
    assert df["request_id"].tolist() == list(range(len(df)))
    assert (df["status"] == "in_flight").any() and (df["status"] == "finished").any()


def test_row_store_spills_past_its_threshold(tmp_path):
    st = store_module.RowStore(spill_rows=5, spill_dir=tmp_path, keep=["a"])
    empty = pd.DataFrame({"a": pd.Series(dtype=int), "b": pd.Series(dtype=float)})
    st.add(pd.DataFrame({"a": [1, 2, 3], "b": [0.1, 0.2, 0.3]}))
    assert not st.spilled
    st.add(pd.DataFrame({"a": [4, 5, 6], "b": [0.4, 0.5, 0.6]}))
    assert st.spilled and len(st.parts) == 2
    assert list(st.kept(empty).columns) == ["a"]
    np.testing.assert_array_equal(st.frame(empty)["b"], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])


def test_cli_writes_spilled_records_as_a_dataset(tmp_path):
    out = tmp_path / "out"
    rc = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", "configs/quickstart.yaml", "--set", "workload.num_requests=300",
         "--set", "run.spill_after_requests=100", "--out", str(out), "--quiet"],
        capture_output=True, text=True, cwd=str(build_module.Path(__file__).resolve().parents[1]))
    assert rc.returncode == 0, rc.stderr
    assert not (out / "requests.parquet").exists()
    frame = pd.read_parquet(out / "requests")
    assert len(frame) == 300
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["arrived"] == 300


def test_unwritable_spill_folder_is_a_clear_error(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    rc = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", "configs/quickstart.yaml", "--set", "workload.num_requests=50",
         "--set", "run.spill_after_requests=10", "--set", f"run.spill_dir={blocked}", "--quiet"],
        capture_output=True, text=True, cwd=str(build_module.Path(__file__).resolve().parents[1]))
    assert rc.returncode == 2
    assert rc.stderr.startswith(f"fleetsim: error: {blocked}/requests: cannot write spilled records")
    assert "Traceback" not in rc.stderr


def test_temporary_spill_folders_go_with_the_results(small_chunks, tmp_path, monkeypatch):
    """Without a spill folder, parts go to a temporary folder that lasts as long as the results (and their copies)
    and is removed after: a sweep's spilled runs, of which only the summary is kept, leave nothing behind."""
    import dataclasses
    import gc
    import tempfile

    from sim.sweep.runner import simulate_summary

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spilling = scenario({**PATCH, "run": {"spill_after_requests": 120}})
    res = simulate(spilling)
    folders = sorted(tmp_path.glob("fleetsim-*"))
    assert len(folders) == 2  # records and change points
    assert all(p.parent in folders for p in res.requests_parts)
    copy = dataclasses.replace(res, summary={})
    del res
    gc.collect()
    assert len(copy.requests) == 600  # the copy still reads its parts
    del copy
    gc.collect()
    assert not list(tmp_path.glob("fleetsim-*"))
    summary = simulate_summary(spilling.model_dump_json(by_alias=True))
    assert summary["engine"]["records_spilled_to"] is not None
    assert not list(tmp_path.glob("fleetsim-*"))


def test_parquet_parts_read_back_the_same_frames_exactly(tmp_path):
    """Parts dictionary-encode all but float columns (faster to write): they read back as pandas' default writer's
    files do, numbers bit for bit, a rejected request's reason and an in-flight request's NaNs
    too."""
    res = simulate(scenario({**PATCH, "run": {"max_duration_s": 5.0},
                             "pools": {"p": {"replicas": 1, "engine": {"max_model_len": 150}}}}))
    df = res.requests
    assert {"finished", "rejected", "in_flight"} <= set(df["status"])
    for name, frame in (("requests", df), ("timeseries", res.timeseries), ("replicas", res.replicas)):
        store_module.write_parquet(frame, tmp_path / f"{name}.parquet")
        frame.to_parquet(tmp_path / f"{name}-default.parquet", index=False)
        back = pd.read_parquet(tmp_path / f"{name}.parquet")
        pd.testing.assert_frame_equal(back, pd.read_parquet(tmp_path / f"{name}-default.parquet"), check_exact=True)
        numeric = frame.select_dtypes("number").columns
        pd.testing.assert_frame_equal(back[numeric], frame[numeric], check_exact=True)


def test_deep_and_pickled_copies_of_spilled_results(small_chunks, tmp_path, monkeypatch):
    """A deep copy keeps the temporary parts alive as the original does; a pickled copy does not (another process
    could not), and reading it after the original is gone says so instead of a raw FileNotFoundError."""
    import copy
    import gc
    import pickle
    import tempfile

    from sim.errors import FleetsimError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    res = simulate(scenario({**PATCH, "run": {"spill_after_requests": 120}}))
    expected = res.requests
    pickled = pickle.loads(pickle.dumps(res))
    del pickled
    gc.collect()
    pd.testing.assert_frame_equal(res.requests, expected)  # freeing a pickled copy removes nothing
    deep = copy.deepcopy(res)
    pickled = pickle.loads(pickle.dumps(res))
    del res
    gc.collect()
    pd.testing.assert_frame_equal(deep.requests, expected)
    del deep
    gc.collect()
    with pytest.raises(FleetsimError, match=r"the spilled requests of this run are gone: .*give simulate a spill_dir"):
        _ = pickled.requests


def test_a_later_run_in_the_same_spill_folder_is_not_read_as_this_ones(small_chunks, tmp_path):
    from sim.cli import write_results
    from sim.errors import FleetsimError

    first = simulate(scenario({**PATCH, "run": {"spill_after_requests": 120}}), spill_dir=tmp_path)
    assert len(first.requests) == 600
    second = simulate(scenario({**PATCH, "workload": {"num_requests": 300}, "run": {"spill_after_requests": 120}}),
                      spill_dir=tmp_path)
    assert len(second.requests) == 300
    for read in (lambda: first.requests, lambda: first.timeseries, lambda: write_results(first, str(tmp_path / "o"))):
        with pytest.raises(FleetsimError, match=r"were replaced, by a later run spilling into the same folder"):
            read()
    write_results(second, str(tmp_path / "o"))  # a str folder, as a notebook gives
    assert len(pd.read_parquet(tmp_path / "o" / "requests")) == 300
    assert first == first and first != second  # identity, not an ambiguous comparison of frames

"""Safe by construction (issue #10 item 5): YAML builds no objects, no code runs from a config, file references
resolve against the file that names them, and a Ray address is used exactly as given."""

from __future__ import annotations

import re

import pytest
import yaml

from sim.errors import FleetsimError
from sim.scenario import load_scenario
from tests.conftest import ROOT

SIM = ROOT / "sim"


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8")
    with pytest.raises(FleetsimError):
        load_scenario(path)
    assert not marker.exists()


def test_the_package_never_evaluates_or_imports_from_config():
    """No eval/exec/dynamic import anywhere in the package, and every YAML read goes through a safe loader."""
    for path in SIM.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), path
        assert "import_module" not in text and "__import__" not in text, path
        for line in (ln for ln in text.splitlines() if "yaml.load(" in ln):
            assert "Loader=" in line and "Unsafe" not in line and "FullLoader" not in line, (path, line)
        assert "yaml.unsafe_load" not in text, path


def test_the_safe_loaders_are_safe():
    from sim.perf.kernel import SAFE_LOADER
    from sim.yamlio import _StrictSafeLoader

    for loader in (SAFE_LOADER, _StrictSafeLoader):  # the safe constructor, never the full or unsafe one
        assert issubclass(loader, yaml.constructor.SafeConstructor)
        assert not issubclass(loader, yaml.constructor.FullConstructor)


def test_file_references_resolve_against_the_scenario_file(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "trace.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0000000,10,5\n"
                                   "2023-11-16 18:00:01.0000000,20,5\n", encoding="utf-8")
    body = ("workload: {type: trace, format: azure, path: %s}\n"
            "pools: {p: {gpu: h100_sxm, model: llama-3.1-8b, engine: {max_model_len: 4096}}}\n")
    (sub / "ok.yaml").write_text(body % "trace.csv", encoding="utf-8")
    assert load_scenario(sub / "ok.yaml").workload.path == str((sub / "trace.csv").resolve())
    (sub / "missing.yaml").write_text(body % "nope.csv", encoding="utf-8")
    with pytest.raises(FleetsimError, match=r"missing\.yaml: workload\.path: trace file not found: .*sub/nope\.csv"):
        load_scenario(sub / "missing.yaml")


def test_a_ray_address_is_used_exactly_as_given(monkeypatch):
    ray = pytest.importorskip("ray")
    from sim.sweep import runner

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise ConnectionError("no cluster (test)")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(runner, "_reachable", lambda address: True)
    with pytest.raises(FleetsimError, match="cannot join a Ray cluster"):
        next(runner._ray([], 1, "ray://head.example:10001"))
    assert seen["address"] == "ray://head.example:10001"


def test_a_whole_number_with_an_exponent_is_a_count():
    """``num_requests: 1e6`` is a million requests (YAML 1.1 would read a string, a float would fail an int field);
    ``1.5e3`` and ``2e-1`` stay floats."""
    from sim.yamlio import load_yaml

    assert load_yaml("a: 1e6\nb: 1.5e3\nc: 2e-1\nd: -3E+2\n") == {"a": 1_000_000, "b": 1500.0, "c": 0.2, "d": -300}
    assert type(load_yaml("a: 1e6")["a"]) is int and type(load_yaml("a: 1.5e3")["a"]) is float

"""The Python API from a notebook: wrong arguments are clear :class:`~sim.errors.FleetsimError` s (never a
TypeError from deep inside), numpy seeds serialise, and a scenario round-trips through its own dump."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sim
from sim import Scenario
from sim.errors import FleetsimError
from tests.conftest import ROOT

QUICKSTART = ROOT / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def small():
    return sim.load_scenario(QUICKSTART, ["workload.num_requests=30"])


@pytest.mark.parametrize(("call", "message"), [
    (lambda sc: sim.simulate(sc, seed="abc"), "seed: 'abc' is not a non-negative integer or a numpy SeedSequence"),
    (lambda sc: sim.simulate(sc, seed=-1), "seed: -1 is not"),
    (lambda sc: sim.simulate(sc, seed=1.5), "seed: 1.5 is not"),
    (lambda sc: sim.simulate(sc, seed=True), "seed: True is not"),
    (lambda sc: sim.simulate({}), "scenario: give a Scenario or the path of a scenario file, not a dict"),
    (lambda sc: sim.simulate(None), "scenario: give a Scenario or the path of a scenario file, not a NoneType"),
    (lambda sc: sim.simulate(sc, spill_dir=5), "spill_dir: give a folder path, not a int"),
    (lambda sc: sim.simulate(sc, progress=5), "progress: give a function of (now_s, done, expected), not a int"),
    (lambda sc: sim.load_scenario(123), "path: give the path of a scenario file, not a int"),
    (lambda sc: sim.load_scenario(QUICKSTART, "pools.l4.replicas=3"),
     "overrides: give a list of 'dotted.key=value' strings, not a str"),
    (lambda sc: sim.load_scenario(QUICKSTART, None), "overrides: give a list of 'dotted.key=value' strings, not a "
                                                     "NoneType"),
    (lambda sc: sim.load_scenario(QUICKSTART, [3]), "overrides: each override is a 'dotted.key=value' string, not 3"),
    (lambda sc: sim.simulate(sc.model_copy(update={"router": sc.router.model_copy(update={"policy": "nope"})})),
     "quickstart: router.policy: unknown router 'nope'"),
])
def test_wrong_arguments_are_clear_errors(small, call, message):
    with pytest.raises(FleetsimError) as err:
        call(small)
    assert str(err.value).startswith(message), str(err.value)


def test_a_numpy_seed_runs_as_its_integer_and_serialises(small):
    res = sim.simulate(small, seed=np.int64(5))
    assert json.dumps(res.summary["seed"]) == "5"
    assert res.scenario.seed == 5
    assert res.summary == sim.simulate(small, seed=5).summary


@pytest.mark.parametrize("name", ["quickstart", "azure_code_hpa_l4", "hybrid_code_l4_h100", "l4_vgpu_consolidation",
                                  "rolling_maintenance", "spot_first_l40s"])
def test_a_scenario_round_trips_through_its_dump(name):
    scenario = sim.load_scenario(ROOT / "configs" / f"{name}.yaml")
    assert Scenario.model_validate(scenario.model_dump()) == scenario
    assert Scenario.model_validate_json(scenario.model_dump_json()) == scenario
    assert Scenario.model_validate(scenario.model_dump(by_alias=True)) == scenario

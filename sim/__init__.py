"""fleetsim: discrete-event simulation of LLM inference fleets.

>>> import sim
>>> sc = sim.load_scenario("configs/quickstart.yaml")   # doctest: +SKIP
>>> res = sim.simulate(sc, seed=0)                       # doctest: +SKIP
>>> res.requests                                         # doctest: +SKIP
"""

from sim.config import Scenario
from sim.errors import FleetsimError, ScenarioError, TraceError
from sim.results import Results
from sim.scenario import load_scenario
from sim.simulate import simulate

__all__ = ["FleetsimError", "Results", "Scenario", "ScenarioError", "TraceError", "load_scenario", "simulate"]
__version__ = "0.1.0"

"""Pure expansion of an experiment into arms (sets of overrides) and replication seeds."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field

import numpy as np

from sim.sweep.config import Experiment, RandomParameter


@dataclass(frozen=True)
class Arm:
    """One combination of parameter values: ``values`` maps dotted keys to values (variant overrides first)."""

    index: int
    label: str
    values: dict = field(default_factory=dict)

    def params_json(self) -> str:
        return json.dumps(self.values, sort_keys=True, default=str)


def _draw(rng: np.random.Generator, p: RandomParameter):
    if p.uniform is not None:
        return float(rng.uniform(*p.uniform))
    if p.loguniform is not None:
        lo, hi = math.log(p.loguniform[0]), math.log(p.loguniform[1])
        return float(math.exp(rng.uniform(lo, hi)))
    if p.integer is not None:
        return int(rng.integers(p.integer[0], p.integer[1], endpoint=True))
    return p.choice[int(rng.integers(len(p.choice)))]


def _label(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def count_arms(exp: Experiment) -> int:
    """How many arms :func:`expand` makes, without making them."""
    par = exp.parameters
    grid = math.prod(len(values) for values in par.grid.values())
    rows = len(next(iter(par.zip.values()))) if par.zip else 1
    samples = par.random.samples if par.random is not None else 1
    return max(1, len(par.variants)) * grid * rows * samples


def expand(exp: Experiment) -> list[Arm]:
    """The arms of ``exp`` in a fixed order: variants x grid points x zip rows x random samples.

    The random samples are drawn from a generator spawned from the experiment's seed (not the replication
    seeds), so the same file always gives the same arms.
    """
    par = exp.parameters
    variants = [(v.name, dict(v.set)) for v in par.variants] or [(None, {})]
    grid = [dict(zip(par.grid, combo, strict=True)) for combo in itertools.product(*par.grid.values())] or [{}]
    zipped = [dict(zip(par.zip, row, strict=True)) for row in zip(*par.zip.values(), strict=True)] or [{}]
    samples: list[dict] = [{}]
    if par.random is not None:
        rng = np.random.default_rng(np.random.SeedSequence(exp.seed, spawn_key=(0x5EED,)))
        samples = [{key: _draw(rng, p) for key, p in par.random.parameters.items()}
                   for _ in range(par.random.samples)]
    arms = []
    for (variant, overrides), g, z, r in itertools.product(variants, grid, zipped, samples):
        values = {**overrides, **g, **z, **r}
        shown = {**g, **z, **r}
        parts = ([variant] if variant else []) + [f"{k}={_label(v)}" for k, v in shown.items()]
        arms.append(Arm(len(arms), ", ".join(parts) or "base", values))
    return arms


def replication_seeds(seed: int, replications: int) -> list[int]:
    """One scenario seed per replication, spawned from ``seed``: the same in every arm (common random numbers)."""
    return [int(child.generate_state(1, dtype=np.uint64)[0] >> 1)
            for child in np.random.SeedSequence(seed).spawn(replications)]

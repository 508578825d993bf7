"""Named random streams spawned from one seed (SPEC 7).

Each source of randomness (arrival times, prompt lengths, output lengths, routing, ...) draws from its own
``numpy.random.Generator``. A stream is keyed by its *name*, not by its position, so adding a new stream
later never moves the numbers an existing one produces: experiments that change one policy keep common
random numbers everywhere else.
"""

from __future__ import annotations

import zlib

import numpy as np

SeedLike = int | np.random.SeedSequence | None


def _root(seed: SeedLike) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is not None and (not isinstance(seed, int | np.integer) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or a SeedSequence, got {seed!r}")
    return np.random.SeedSequence(seed)


class Streams:
    """Factory of independent, reproducible generators, one per name.

    Parameters
    ----------
    seed
        Non-negative int, a ``SeedSequence`` (e.g. one child of ``SeedSequence(base).spawn(n)``), or None
        for fresh OS entropy.

    Examples
    --------
    >>> s = Streams(0)
    >>> a = s.get("arrivals").random()
    >>> a == Streams(0).get("arrivals").random()
    True
    """

    def __init__(self, seed: SeedLike) -> None:
        self.root = _root(seed)
        self._made: dict[str, np.random.Generator] = {}

    def get(self, name: str) -> np.random.Generator:
        """The generator of stream ``name`` (the same object on every call within one run)."""
        if name not in self._made:
            key = (*self.root.spawn_key, zlib.crc32(name.encode()))
            child = np.random.SeedSequence(self.root.entropy, spawn_key=key)
            self._made[name] = np.random.default_rng(child)
        return self._made[name]


class PrefixedStreams:
    """The streams of ``base`` under names prefixed with ``prefix`` (a traffic class's own arrivals and lengths)."""

    def __init__(self, base: Streams, prefix: str) -> None:
        self.base, self.prefix = base, prefix

    def get(self, name: str) -> np.random.Generator:
        return self.base.get(self.prefix + name)

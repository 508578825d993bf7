"""Elementwise ``exp``, ``log``, ``log2``, ``exp2`` and ``cos`` of arrays with the C library's functions, as
:mod:`math` computes them.

numpy's own vectorised ``exp``, ``log`` and ``cos`` may run SIMD code whose last bits differ from the C library's,
and differ between CPUs (numpy dispatches to AVX-512 code where the CPU has it). Results must be the same on every
machine and in both engines (the compiled core calls the C library), so the decode-attention tables, runs of decode
steps and the workload samplers go through these: in the compiled extension where it is built, else one
:mod:`math` call per element (the same C functions, slower).
"""

from __future__ import annotations

import math

import numpy as np

try:
    from sim.engine._core import libm as _libm
except ImportError:  # built without a C compiler
    _libm = None

_PYTHON = (math.exp, math.log2, math.exp2, math.cos, math.log)


def _apply(kind: int, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float64)
    if _libm is None:
        fn = _PYTHON[kind]
        return np.array([fn(v) for v in x.ravel().tolist()], dtype=np.float64).reshape(x.shape)
    out = np.empty_like(x)
    _libm(kind, x, out)
    return out


def exp(x: np.ndarray) -> np.ndarray:
    """``math.exp`` of each element."""
    return _apply(0, x)


def log2(x: np.ndarray) -> np.ndarray:
    """``math.log2`` of each element."""
    return _apply(1, x)


def exp2(x: np.ndarray) -> np.ndarray:
    """``math.exp2`` of each element."""
    return _apply(2, x)


def cos(x: np.ndarray) -> np.ndarray:
    """``math.cos`` of each element."""
    return _apply(3, x)


def log(x: np.ndarray) -> np.ndarray:
    """``math.log`` of each element."""
    return _apply(4, x)

"""Build the optional compiled engine core (sim/engine/_core.c); everything else is in pyproject.toml.

``optional=True``: where no C compiler is found the install still succeeds, and the simulator runs its Python
engine (the same results, slower). ``-ffp-contract=off`` keeps every floating-point operation as written (no fused
multiply-add), so the core's times match the Python engine's on every machine.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sim.engine._core", ["sim/engine/_core.c"], optional=True,
                             extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"])])

"""Suite-wide settings, applied before JAX computes anything (XLA reads its flags once, when
its backend starts).

XLA compiles dominate the default run (6-20 s per new shape on CPU, far more than the
sampling). The suite compiles with XLA's LLVM backend at optimisation level 0 and without its
expensive passes: about half the compile time (test_smc.py: 126 s instead of about 200 s on
2 cores), for programs that run a little slower. The tests measure statistics, not speed;
benchmarks and users keep XLA's defaults. Set ``SAMPLERS_TEST_XLA_DEFAULTS=1`` to run the
suite with the defaults. The flags are inherited by the tests' subprocesses (examples,
fake-device runs).

The suite also turns off jaxlib 0.10's CPU YNN fusions (:func:`samplers.configure_xla`: NaN
products with a constant operand, PaRIS 7-15x slower), as the ``samplers`` command does;
``SAMPLERS_KEEP_XLA_FLAGS=1`` keeps them.
"""
import os

from samplers import configure_xla

FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")

if not os.environ.get("SAMPLERS_TEST_XLA_DEFAULTS"):
    flags = os.environ.get("XLA_FLAGS", "").split()
    os.environ["XLA_FLAGS"] = " ".join(flags + [f for f in FAST_COMPILE if f not in flags])
configure_xla()

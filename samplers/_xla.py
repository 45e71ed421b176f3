"""An opt-in workaround for jaxlib 0.10's CPU "YNN" fusions: :func:`configure_xla`.

With jaxlib 0.10.2 on CPU (re-measured on 2-core x86-64), the YNNPACK fusions XLA turns on
by default

1. return all-NaN results for some jitted matrix products with a compile-time constant
   operand at n >= ~450 rows: ``2 (F @ x - F.sum(1) x) + K @ zeros((n, d))`` with kernel
   matrices K, F of (n, d) points gives 4480 NaNs of 4480 entries at n = 448 and none at
   n = 400 (the same with ``ones``; none when the constant is passed as an argument); the
   Stein repulsion once did exactly this, and the library now avoids it
   (:func:`samplers.stein.kernels.stein_direction` takes ``scores=None``);
2. run PaRIS's exact backward draws 7-15x slower (N = 1,000 particles: 16 ms instead of
   2.4 ms per step, measured on a busy 2-core CPU).

Both go away with ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNN fusions).
XLA reads ``XLA_FLAGS`` once, when JAX's backend starts (the first computation, not
``import jax``), so the flag must be set before that. ``samplers`` does not change anyone's
flags on import: the ``samplers`` command, the test suite and the benchmarks call
:func:`configure_xla`; a script calls it before its first JAX computation, or sets the flag
in its environment.
"""
from __future__ import annotations

import os
import sys
import warnings

_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def _backend_started() -> bool:
    """Whether JAX's backends exist (so XLA has read its flags). Reads a private JAX
    function; False when JAX is not imported yet or the function has moved."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if started is not None else False


def configure_xla() -> bool:
    """Turn off jaxlib 0.10's CPU YNN fusions for this process (the NaN products and the
    slow PaRIS backward draws described in ``samplers/_xla.py``): add
    ``--xla_cpu_experimental_ynn_fusion_type=`` to the ``XLA_FLAGS`` environment variable.

    Call it before the first JAX computation (``import jax`` may come before it)::

        import samplers
        samplers.configure_xla()

    It changes nothing, and returns False, when jaxlib is not 0.10 (the flag exists only
    there, and XLA aborts on unknown flags), when ``XLA_FLAGS`` already names the flag (yours
    wins), or when ``SAMPLERS_KEEP_XLA_FLAGS`` is set (the ``samplers`` command, the tests
    and the benchmarks then run with XLA's defaults).

    Returns:
      True when it added the flag.

    Warns (RuntimeWarning) when JAX's backend has already started: XLA has read its flags,
    so the flag is not added and nothing changes.
    """
    try:
        import jaxlib
        version = tuple(int(p) for p in jaxlib.__version__.split(".")[:2])
    except (ImportError, ValueError):
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if version != (0, 10) or _FLAG in flags or os.environ.get("SAMPLERS_KEEP_XLA_FLAGS"):
        return False
    if _backend_started():
        warnings.warn("samplers.configure_xla() was called after the first JAX computation: "
                      "XLA has already read XLA_FLAGS, so YNN fusions stay on. Call it before "
                      f"any JAX computation, or start Python with XLA_FLAGS={_FLAG}=",
                      RuntimeWarning, stacklevel=2)
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}=".strip()
    return True

"""A workaround for jaxlib 0.10's CPU "YNN" fusions, applied when ``samplers`` is imported.

With jaxlib 0.10.2 on CPU (measured on 2-core x86-64), the YNNPACK fusions XLA turns on by
default (1) return all-NaN results for a matrix product with a compile-time constant zero
operand at n >= ~450 rows (a silent wrong answer), and (2) run fused reductions over
pairwise kernels 10-20x slower (PaRIS exact backward draws: 27 ms instead of 1.4 ms per
step at N = 1,000). Both go away with ``--xla_cpu_experimental_ynn_fusion_type=`` (empty:
no YNN fusions), which we add to ``XLA_FLAGS`` unless the user set the flag, set
``SAMPLERS_KEEP_XLA_FLAGS=1``, or runs another jaxlib (unknown flags abort XLA, so the flag
is only added where it is known to exist). It only takes effect if no JAX computation ran
before ``import samplers``.
"""
from __future__ import annotations

import os

_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def disable_ynn_fusion() -> bool:
    """Add the flag to ``XLA_FLAGS``; True when it was added by this call."""
    try:
        import jaxlib
        version = tuple(int(p) for p in jaxlib.__version__.split(".")[:2])
    except (ImportError, ValueError):
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if version != (0, 10) or _FLAG in flags or os.environ.get("SAMPLERS_KEEP_XLA_FLAGS"):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}=".strip()
    return True

"""Sliced Wasserstein: time per estimate, ``samplers.sliced`` against POT.

Both sides get the same float32 point clouds and the same L directions (POT as
``projections`` of shape (d, L)) and compute SW_2 = (mean_l W_2^2(theta_l#mu, theta_l#nu))^(1/2):
projecting, sorting, averaging. Peers: POT's numpy backend, and POT's jax backend under
``jax.jit`` (POT needs explicit weights ``a``, ``b`` to be traceable). A third row per size
times our upper control-variate estimate against POT's plain one (the CV's extra cost).

``python -m benchmarks.bench_sliced [--quick] [--out DIR]``.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from samplers import sliced

from .harness import Case, main

NAME = "sliced"
TITLE = "Sliced Wasserstein: samplers vs POT (time per estimate)"
PEERS = ("pot",)
NOTES = """
Same float32 clouds (x ~ N(0, I), y ~ N(1, 4 I)) and the same L directions on both sides; each
call computes SW_2 from scratch (projection O(L n d), sorting O(L n log n)). `pot-numpy`: POT's
numpy backend on numpy arrays; `pot-jax`: POT's jax backend called under `jax.jit` with explicit
uniform weights. `sw+ucv` rows time our upper control-variate estimate (same directions)
against POT's plain estimate. On CPU our sort goes through numpy (XLA:CPU's sort is ~20x
slower); the check column compares the two SW_2 values.
"""


def config(quick: bool) -> dict:
    """Sizes. ``quick`` (under two minutes on two cores) keeps n <= 1e4, d <= 64, L = 100."""
    if quick:
        grid = [(1000, 3, 100), (1000, 64, 100), (10_000, 3, 100), (10_000, 64, 100)]
    else:
        grid = [(n, d, L) for n in (1000, 10_000, 100_000) for d in (3, 64, 784)
                for L in (100, 1000) if n * L * max(d, 64) <= 2e10]  # skip what CPU RAM/time bars
    return {"grid": grid, "repeats": 3 if quick else 5, "min_time": 0.02 if quick else 0.2,
            "peers": ["pot-numpy", "pot-jax"]}


def _clouds(n, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (1.0 + 2.0 * rng.standard_normal((n, d))).astype(np.float32)
    return x, y


def cases(cfg):
    import ot

    for n, d, L in cfg["grid"]:
        x, y = _clouds(n, d)
        theta = np.asarray(sliced.directions(jax.random.key(0), L, d), np.float32)
        xj, yj, thj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(theta)
        params = {"n": n, "d": d, "L": L}

        def ours(cv=None, xj=xj, yj=yj, thj=thj):
            return sliced.sliced_wasserstein(None, xj, yj, directions=thj, control_variate=cv)

        def check(a, b):
            return {"SW_2": (a, b)}

        proj = theta.T.copy()
        pot_np = lambda x=x, y=y, proj=proj: ot.sliced_wasserstein_distance(  # noqa: E731
            x, y, projections=proj)
        yield Case("sw", params, ours, pot_np, "pot-numpy", check)

        w = jnp.full((n,), 1.0 / n, jnp.float32)
        pot_jit = jax.jit(lambda x, y, a, b, p: ot.sliced_wasserstein_distance(
            x, y, a, b, projections=p))
        pj = jnp.asarray(proj)
        yield Case("sw", params, ours, lambda: pot_jit(xj, yj, w, w, pj), "pot-jax (jit)", check)
        yield Case("sw+ucv", params, lambda: ours("upper"), pot_np, "pot-numpy", check)


if __name__ == "__main__":
    sys.exit(main({NAME: "benchmarks.bench_sliced"}))

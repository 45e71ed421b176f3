"""The row of ``samplers demo`` that the ``vi`` package brings (the ``samplers.demos`` entry
point ``fbgvi``): FB-GVI on a target with an exact answer, the error, the time. No module of
``vi`` imports this one."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from samplers import diagnostics, targets

from .fbgvi import fbgvi, fit
from .gaussian import Gaussian

__all__ = ["fbgvi_row"]


def fbgvi_row(seed: int = 0, num_steps: int = 200, num_draws: int = 2000) -> dict:
    """The fbgvi row: FB-GVI (Gauss-Hermite expectations, h = 0.5 / lambda_max of the
    precision) on the demo's 2-d Gaussian target N([1, -1], [[1, 0.8], [0.8, 1.5]]).

    On a Gaussian target the best Gaussian is the target itself [Diao2023,
    Theorem 3.2], so the error is the exact W2 distance between the final
    q = N(m, Sigma) and the target (float32 rounding level when converged).

    Returns ``{"method", "target", "w2_error", "seconds", "num_steps"}`` (``seconds`` includes
    compilation) and, for the demo's plot, ``"draws"`` (``num_draws`` draws of the final q)
    and ``"exact_draws"`` (as many exact draws of the target), both (num_draws, 2).
    """
    target = targets.gaussian(jnp.array([1.0, -1.0]), jnp.array([[1.0, 0.8], [0.8, 1.5]]))
    beta = float(jnp.max(jnp.linalg.eigvalsh(jnp.linalg.inv(target.cov))))
    alg = fbgvi(target.logdensity_fn, step_size=0.5 / beta, expectation="gauss_hermite",
                num_points=2)
    start = time.perf_counter()
    q, _ = fit(jax.random.key(seed), alg, Gaussian.standard(target.dim), num_steps,
               thin=num_steps, progress=False)
    q = jax.block_until_ready(q)
    seconds = time.perf_counter() - start
    error = float(diagnostics.gaussian_w2(q.mean, q.cov, target.mean, target.cov))
    k_q, k_exact = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1))
    z = jax.random.normal(k_q, (num_draws, target.dim))
    draws = q.mean + z @ jnp.linalg.cholesky(q.cov).T
    return {"method": "fbgvi", "target": target.name, "w2_error": error, "seconds": seconds,
            "num_steps": num_steps, "min_ess": None, "draws": np.asarray(draws),
            "exact_draws": np.asarray(target.sample(k_exact, num_draws)),
            "draws_label": "fbgvi: draws of the fitted q"}

"""The row of ``samplers demo`` that the ``diffusion`` package brings (the ``samplers.demos``
entry point ``diffusion``): a PF-ODE solver on Gaussian data with the exact score, scored by
the exact W2 of its output law (:mod:`diffusion.exact_law`). No module of ``diffusion``
imports this one."""
from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np

from .exact_law import _gaussian_w2, _law_from_images, _target
from .scores import gaussian
from .sde import VPSDE
from .solvers import solve_ode

__all__ = ["diffusion_row"]


def diffusion_row(seed: int = 0, num_samples: int = 10_000, num_steps: int = 20) -> dict:
    """The diffusion row: DPM-Solver-2 (``num_steps`` steps = 2 x num_steps NFE,
    log-SNR grid, VP linear, float32) on 2-d correlated Gaussian data with the exact score.

    "w2_error" is the exact W2 between the law of the samples and the target p_{t_min}
    (the solver is affine here, so the law is Gaussian and computed exactly; see
    :func:`diffusion.exact_law.gaussian_sampling_w2`); it includes the prior mismatch at t_max = 1.
    "seconds" times drawing ``num_samples`` points (prior + ``solve_ode``; compilation
    included). For the demo's plot: "draws" (the samples, (num_samples, 2)) and
    "exact_draws" (as many exact draws of the target p_{t_min}).
    """
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=2)
    a = rng.normal(size=(2, 2))
    cov = a @ a.T / 2 + 0.1 * np.eye(2)
    sde = VPSDE()
    score = gaussian(sde, mean, cov)
    start = time.perf_counter()
    # one solve carries the draws and, in front, 0 and the unit vectors (the affine map)
    x_T = rng.standard_normal((num_samples, 2)).astype(np.float32) * sde.prior_std
    out = solve_ode(jnp.concatenate([jnp.zeros((1, 2)), jnp.eye(2), x_T]), sde, score,
                    solver="dpm_solver_2", num_steps=num_steps, time_grid="logsnr")
    out.block_until_ready()
    seconds = time.perf_counter() - start
    c, s = _law_from_images(sde, out[:3])
    tm, tc = _target(sde, mean, cov, sde.t_min)
    w2 = _gaussian_w2(c, s, tm, tc)
    exact = tm + rng.standard_normal((num_samples, 2)) @ np.linalg.cholesky(tc).T
    return {"method": f"diffusion dpm_solver_2 ({num_steps} steps, {2 * num_steps} NFE)",
            "target": "Gaussian (d=2), exact score", "w2_error": w2, "min_ess": None,
            "seconds": seconds, "plot": None, "draws": np.asarray(out[3:]),
            "exact_draws": exact}

"""PF-ODE solvers: ``diffusion`` against diffrax's general-purpose solvers on the same ODE.

Same probability-flow ODE (VP linear, t from 1 to 1e-3), same exact Gaussian score
(eigenvalues geometric in [0.05, 2], random basis), same x_T, float32:

* fixed-step Heun, 50 steps (100 NFE), ours vs ``diffrax.Heun`` with ``ConstantStepSize``;
* DPM-Solver-3 with 20 log-SNR steps (60 NFE) vs ``diffrax.Tsit5`` adaptive at
  rtol = atol = 1e-3 (its NFE is stages x attempted steps);
* DPM-Solver-2 with 25 steps (50 NFE) vs ``diffrax.Heun`` with 25 steps (50 NFE): accuracy
  at equal NFE.

The check column gives the RMS endpoint error of each side against the closed-form flow.

``python -m benchmarks.bench_diffusion [--quick] [--out DIR]``.
"""
from __future__ import annotations

import sys
from typing import Iterator

import jax.numpy as jnp
import numpy as np

import diffusion
from diffusion.diffrax_backend import solve_ode_diffrax

from .harness import Case, main

NAME = "diffusion"
TITLE = "PF-ODE solvers: diffusion vs diffrax (time and error at equal work)"
PEERS = ("diffrax",)
NOTES = """
Same PF-ODE, exact Gaussian score, x_T and float32 on both sides. `ours` is `diffusion.solve_ode`
(one jitted `lax.fori_loop`); the peer is `diffrax.diffeqsolve` (jitted). The check column is
the RMS endpoint error against the closed-form Gaussian flow (ours, peer). diffrax has no
exponential integrators; its adaptive step count includes rejected steps.
"""


def config(quick: bool) -> dict:
    return {"dims": [2, 64] if quick else [2, 64, 512], "num_points": 1000,
            "repeats": 3 if quick else 7, "min_time": 0.02 if quick else 0.1}


def _problem(dim: int, n: int):
    rng = np.random.default_rng(dim)
    q = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    cov = q @ np.diag(np.geomspace(0.05, 2.0, dim)) @ q.T
    mean = rng.standard_normal(dim) * 0.5
    sde = diffusion.VPSDE()
    score = diffusion.scores.gaussian(sde, mean, cov)
    x_T = jnp.asarray(rng.standard_normal((n, dim)), jnp.float32)
    exact = diffusion.gaussian_flow(x_T, sde, mean, cov, sde.t_max, sde.t_min)
    return sde, score, x_T, exact


def _err(exact):
    def check(ours, peer):
        rms = lambda x: float(jnp.sqrt(jnp.mean(jnp.sum((x - exact) ** 2, -1))))  # noqa: E731
        return {"rms error": (rms(ours), rms(peer))}
    return check


def cases(cfg: dict) -> Iterator[Case]:
    import diffrax

    for dim in cfg["dims"]:
        sde, score, x_T, exact = _problem(dim, cfg["num_points"])
        params = {"d": dim, "n": cfg["num_points"]}
        yield Case("heun, 50 steps (100 NFE)", params,
                   lambda: diffusion.solve_ode(x_T, sde, score, solver="heun", num_steps=50),
                   lambda: solve_ode_diffrax(x_T, sde, score, solver=diffrax.Heun(),
                                             num_steps=50)[0],
                   "diffrax Heun", _err(exact))
        yield Case("dpm_solver_3 20 steps (60 NFE) vs Tsit5 adaptive 1e-3", params,
                   lambda: diffusion.solve_ode(x_T, sde, score, solver="dpm_solver_3",
                                               num_steps=20),
                   lambda: solve_ode_diffrax(x_T, sde, score, rtol=1e-3, atol=1e-3)[0],
                   "diffrax Tsit5 (PID)", _err(exact))
        yield Case("dpm_solver_2 25 steps vs Heun 25 steps (50 NFE each)", params,
                   lambda: diffusion.solve_ode(x_T, sde, score, solver="dpm_solver_2",
                                               num_steps=25),
                   lambda: solve_ode_diffrax(x_T, sde, score, solver=diffrax.Heun(),
                                             num_steps=25)[0],
                   "diffrax Heun", _err(exact))


if __name__ == "__main__":
    sys.exit(main({NAME: __name__}))

"""Stein variational samplers: SVGD, mirrored SVGD, SVMD, SVNG; kernels; mirror maps.

Shi, Liu & Mackey, "Sampling with Mirrored Stein Operators", ICLR 2022 (arXiv 2106.12506);
Liu & Wang, "Stein Variational Gradient Descent", NeurIPS 2016. See ``docs/stein.md``.

    alg = samplers.stein.msvgd(target.logdensity_fn, samplers.stein.mirror.simplex_entropic(),
                               optimizer=samplers.stein.rmsprop(0.1))
    trace = samplers.run(key, alg, particles, num_steps=500, thin=500)
    idata = samplers.stein.to_arviz(trace)        # one chain, draw = particle
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from . import kernels, mirror
from .kernels import Kernel, imq, rbf
from .mirror import MirrorMap
from .samplers import (SteinInfo, SteinState, dirichlet_dual_logdensity, msvgd,
                       polynomial_decay, rmsprop, svgd, svmd, svmd_direction, svng, to_arviz)

__all__ = ["Kernel", "MirrorMap", "SteinInfo", "SteinState", "demo_case",
           "dirichlet_dual_logdensity", "imq", "kernels", "mirror", "msvgd", "polynomial_decay",
           "rbf", "rmsprop", "svgd", "svmd", "svmd_direction", "svng", "to_arviz"]

DEMO_ALPHA = (4.0, 2.0, 3.0, 1.5)


def demo_case(seed: int = 0, num_particles: int = 100, num_steps: int = 1000) -> dict:
    """One ``samplers demo`` row: MSVGD (entropic simplex map, IMQ kernel with the median
    bandwidth, the theory's plain step eps = 0.1 on eta) on Dirichlet(4, 2, 3, 1.5), particles
    started from exact uniform draws on the simplex (Dirichlet(1, 1, 1, 1), numpy seed ``seed``).

    The error ``w2_error`` is the Wasserstein-2 distance between the Gaussian with the
    particles' mean and covariance and the one with the exact Dirichlet mean and covariance
    (the metric of the other demo rows). Returns a dict with "method", "target",
    "w2_error", "min_ess" (None: particles, not a chain), "seconds", "plot" (None) and, for
    the demo's plot, "draws" (the final particles, (num_particles, 3): the first three
    coordinates of the simplex) and "exact_draws" (1000 exact Dirichlet draws, likewise).
    """
    from ..diagnostics import gaussian_w2
    from ..run import run
    from ..targets import dirichlet

    target = dirichlet(jnp.asarray(DEMO_ALPHA))
    rng = np.random.default_rng(seed)
    x0 = jnp.asarray(rng.dirichlet(np.ones(len(DEMO_ALPHA)), num_particles)[:, :-1], jnp.float32)
    alg = msvgd(target.logdensity_fn, mirror.simplex_entropic(), step_size=0.1)
    start = time.perf_counter()
    trace = run(jax.random.key(seed), alg, x0, num_steps, thin=num_steps, progress=False)
    final = np.asarray(trace.positions[0, -1], np.float64)
    seconds = time.perf_counter() - start
    error = float(gaussian_w2(final.mean(0), np.cov(final.T), np.asarray(target.mean),
                              np.asarray(target.cov)))
    exact = np.asarray(target.sample(jax.random.fold_in(jax.random.key(seed), 1), 1000))
    return {"method": "msvgd (simplex)", "target": f"dirichlet{DEMO_ALPHA} (n={num_particles})",
            "w2_error": error, "min_ess": None, "seconds": seconds, "plot": None,
            "draws": final, "exact_draws": exact, "axis_labels": ("$x_1$", "$x_2$"),
            "draws_label": f"msvgd: {num_particles} particles after {num_steps} steps"}

"""Guarantee checks of the Langevin samplers (``samplers verify --method langevin``)."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import langevin
from ..run import run
from . import Check, Outcome, mc_mean, within


def ula_variance(make: Callable = langevin.ula) -> Check:
    """ULA on N(0, s^2) is stationary at s^2 / (1 - h / (2 s^2)), not s^2: its O(h) bias
    (the AR(1) recursion x' = (1 - h/s^2) x + sqrt(2h) xi; Durmus & Moulines 2017).
    ``make(logdensity_fn, step_size)`` builds the kernel (a broken copy makes it fail)."""
    s2, h = 2.0, 1.0

    def measure(key, full: bool) -> Outcome:
        chains, steps = (500, 2000) if full else (200, 500)
        alg = make(lambda x: -0.5 * jnp.sum(x ** 2) / s2, h)
        trace = run(alg, key, jnp.zeros(1), steps, num_chains=chains, num_warmup=100,
                    progress=False)
        var, se = mc_mean(np.asarray(trace.positions)[..., 0] ** 2)
        return within(var, s2 / (1 - h / (2 * s2)), se,
                      f"E[x^2] on N(0, {s2:g}) at h = {h:g}, {chains} chains x {steps} steps")

    return Check("ula", "Durmus & Moulines 2017", "O(h) stationary bias, exact for a Gaussian",
                 measure)


def checks() -> list[Check]:
    """The Langevin checks, in the table's order."""
    return [ula_variance()]

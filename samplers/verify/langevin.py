"""Guarantee checks of the Langevin samplers (``samplers verify --method langevin``).

Closed forms on Gaussian targets (derived on docs/langevin.md): ULA's
stationary variance s^2 / (1 - h / (2 s^2)), MALA's exact invariance, SGLD's
(2 + h g) / (a (2 - h a)) with state-independent gradient noise of variance g, BAOAB's exact
position marginal. Each factory takes the algorithm's constructor as ``make`` so that a test
can pass a broken copy and see the check fail.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from .. import langevin
from ..data import minibatches
from ..run import run
from . import Check, Outcome, mc_mean, within


def _second_moment(alg, key, chains: int, steps: int, warmup: int, **kwargs) -> tuple[float, float]:
    """E[x^2] of a one-dimensional chain started at 0, with its ESS-based standard error."""
    trace = run(key, alg, jnp.zeros(1), steps, num_chains=chains, num_warmup=warmup,
                progress=False, **kwargs)
    return mc_mean(np.asarray(trace.positions)[..., 0] ** 2)


def ula_variance(make: Callable = langevin.ula) -> Check:
    """ULA on N(0, s^2) is stationary at s^2 / (1 - h / (2 s^2)), not s^2: its O(h) bias
    (elementary: the AR(1) recursion x' = (1 - h/s^2) x + sqrt(2h) xi; [Durmus2017] bound
    ULA's bias on general smooth targets).
    ``make(logdensity_fn, step_size)`` builds the kernel (a broken copy makes it fail)."""
    s2, h = 2.0, 1.0

    def measure(key, full: bool) -> Outcome:
        chains, steps = (500, 2000) if full else (200, 500)
        alg = make(lambda x: -0.5 * jnp.sum(x ** 2) / s2, h)
        var, se = _second_moment(alg, key, chains, steps, 100)
        return within(var, s2 / (1 - h / (2 * s2)), se,
                      f"E[x^2] on N(0, {s2:g}) at h = {h:g}, {chains} chains x {steps} steps")

    return Check("ula", "Durmus2017", "O(h) stationary bias, exact for a Gaussian",
                 measure)


def mala_exact(make: Callable = langevin.mala) -> Check:
    """MALA leaves pi invariant at every step size [Roberts1996, eqs. 2.3-2.4]: on
    N(0, s^2) at h = 1, where ULA is stationary at s^2 / (1 - h / (2 s^2)) = 2.67, E[x^2] = s^2.
    The step size is held fixed (no warm-up adaptation). ``make(logdensity_fn, step_size)``."""
    s2, h = 2.0, 1.0

    def measure(key, full: bool) -> Outcome:
        chains, steps = (500, 2000) if full else (200, 500)
        alg = make(lambda x: -0.5 * jnp.sum(x ** 2) / s2, h)
        var, se = _second_moment(alg, key, chains, steps, 100, adapt_step_size=False)
        return within(var, s2, se, f"E[x^2] on N(0, {s2:g}) at h = {h:g} (ULA: "
                      f"{s2 / (1 - h / (2 * s2)):.3g}), {chains} chains x {steps} steps")

    return Check("mala", "Roberts1996", "exact invariance at a large step", measure)


def gaussian_mean_model(n_data: int = 100, batch: int = 10, s: float = 1.0, lambda0: float = 1.0):
    """theta ~ N(0, 1/lambda0), x_i ~ N(theta, s^2), fixed data: the minibatch gradient is
    -a (theta - post_mean) plus state-independent noise of variance
    g = (N/s^2)^2 v/n (N - n)/(N - 1) (batches without replacement, v the data's 1/N
    variance). Returns (data, logprior, loglik, a, post_mean, g)."""
    data = jnp.asarray(np.random.default_rng(0).normal(1.0, 1.5, n_data), dtype=jnp.float32)
    a = lambda0 + n_data / s ** 2
    post_mean = float(jnp.sum(data)) / s ** 2 / a
    g = (n_data / s ** 2) ** 2 * float(jnp.var(data)) / batch * (n_data - batch) / (n_data - 1)
    return (data, lambda th: -0.5 * lambda0 * jnp.sum(th ** 2),
            lambda th, xi: -0.5 * jnp.sum((xi - th) ** 2) / s ** 2, a, post_mean, g)


def sgld_variance(make: Callable = langevin.sgld) -> Check:
    """SGLD with a constant step on the Gaussian-mean posterior N(m, 1/a), minibatches of 10
    of 100 data: stationary variance (2 + h g) / (a (2 - h a)), the O(h) bias including the
    gradient noise g ([Vollmer2016]; scalar case of S = (1 - ha)^2 S + 2h
    + h^2 g). ``make(grad_estimator, step_size)`` builds the kernel."""
    n_data, batch, h = 100, 10, 0.006

    def measure(key, full: bool) -> Outcome:
        chains, steps = (300, 1200) if full else (100, 500)
        data, logprior, loglik, a, post_mean, g = gaussian_mean_model(n_data, batch)
        alg = make(langevin.minibatch_gradient(logprior, loglik, n_data), h)
        trace = run(key, alg, jnp.full(1, post_mean), steps, num_chains=chains, num_warmup=100,
                    batches=minibatches(data[:, None], batch), progress=False)
        var, se = mc_mean((np.asarray(trace.positions)[..., 0] - post_mean) ** 2)
        return within(var, (2 + h * g) / (a * (2 - h * a)), se,
                      f"E[(x - m)^2], N = {n_data}, batch {batch}, h = {h:g} (posterior "
                      f"{1 / a:.3g}), {chains} chains x {steps} steps")

    return Check("sgld", "Vollmer2016",
                 "O(h) variance bias with gradient noise, exact for a Gaussian", measure)


def baoab_position(make: Callable = langevin.underdamped) -> Check:
    """BAOAB's position marginal is exact on a Gaussian for every stable h and friction
    [Leimkuhler2013]: on N(0, 1) at h = 1.5, E[x^2] = 1 while its velocity variance
    is 1 - h^2/4 and OBABO's position variance 1 / (1 - h^2/4) = 2.29.
    ``make(logdensity_fn, step_size, friction)`` builds the kernel."""
    h, friction = 1.5, 1.0

    def measure(key, full: bool) -> Outcome:
        chains, steps = (500, 2000) if full else (200, 500)
        alg = make(lambda x: -0.5 * jnp.sum(x ** 2), h, friction)
        var, se = _second_moment(alg, key, chains, steps, 100)
        return within(var, 1.0, se, f"BAOAB E[x^2] on N(0, 1) at h = {h:g}, friction "
                      f"{friction:g}, {chains} chains x {steps} steps")

    return Check("underdamped", "Leimkuhler2013",
                 "BAOAB position marginal exact on a Gaussian", measure)


def checks() -> list[Check]:
    """The Langevin checks, in the table's order."""
    return [ula_variance(), mala_exact(), sgld_variance(), baoab_position()]

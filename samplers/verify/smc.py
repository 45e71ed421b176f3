"""Guarantee checks of PaRIS and PaRIS particle Gibbs (``samplers verify --method smc``).

Both on the scalar linear Gaussian model x_{t+1} = 0.9 x_t + N(0, 0.5), y_t = x_t + N(0, 1),
x_0 ~ N(0, 1), where the smoothed lag-one moment sum_t E[x_t x_{t+1} | y] is exact from the
Rauch-Tung-Striebel smoother: sum_t (P_{t,t+1|T} + m_{t|T} m_{t+1|T}). Float64 throughout
(``jax.enable_x64``), as the suite's SMC tests.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import smc
from . import Check, Outcome, within


def lag_one(t, x, x_next):
    """h~_t(x_t, x_{t+1}) = x_t x_{t+1} (scalar state)."""
    return x[0] * x_next[0]


def scalar_model():
    """The linear Gaussian model of the module docstring."""
    return smc.LinearGaussian(jnp.float64(0.9), jnp.float64(0.5), 1.0, 1.0, 0.0, 1.0)


def exact_lag_one(model, ys) -> float:
    """sum_t E[x_t x_{t+1} | y_{0:T-1}] from the RTS smoother (scalar state)."""
    rts = smc.rts_smoother(model, ys)
    return float(jnp.sum(rts.cross_covs[:, 0, 0] + rts.means[:-1, 0] * rts.means[1:, 0]))


def _replicate_mean(values):
    """Mean of independent replicates and its standard error."""
    values = np.asarray(values, np.float64)
    return values.mean(), values.std(ddof=1) / np.sqrt(values.size)


def paris_smoothing(make: Callable = smc.paris) -> Check:
    """PaRIS [Olsson2017, Alg. 2] with Ñ = 2 is consistent for smoothed additive
    functionals: the mean of R independent estimates of sum_t E[x_t x_{t+1} | y] lies within
    5 standard errors of the RTS value. Its O(T / N) bias is below the standard error at
    these sizes (about -0.2 against 0.3 quick; docs/smc.md), so a wrong transition, backward
    kernel or weight fails. Quick: T = 20, N = 200, R = 64, exact backward draws (one
    compile); full: T = 50, N = 1,000, R = 256, accept-reject draws (the default).
    ``make(keys, model, ys, additive_fn, num_particles, backward=)`` is the estimator."""

    def measure(key, full: bool) -> Outcome:
        T, n, reps, backward = (50, 1000, 256, "auto") if full else (20, 200, 64, "exact")
        k_data, k_run = jax.random.split(key)
        with jax.enable_x64(True):
            model = scalar_model()
            _, ys = smc.simulate(k_data, model, T)
            est = make(jax.random.split(k_run, reps), model, ys, lag_one, n,
                       backward=backward).estimate
            exact = exact_lag_one(model, ys)
        mean, se = _replicate_mean(est)
        return within(mean, exact, se, f"sum_t E[x_t x_t+1 | y], T = {T}, N = {n}, "
                      f"{reps} replicates, {backward} backward draws")

    return Check("paris", "Olsson2017",
                 "smoothed additive functional -> RTS value (O(1/N) bias)", measure)


def ppg_exact_reference(make: Callable = smc.ppg) -> Check:
    """PPG's kernel leaves the smoothing law invariant and its sweep estimate is unbiased
    there [Cardoso2023]: one PPG iteration whose
    reference path is an exact draw from the smoother (Kalman forward pass, backward
    Gaussian draws) gives an unbiased estimate of sum_t E[x_t x_{t+1} | y] at any N >= 2,
    where PaRIS at the same N is biased by O(T / N) (about -15 at N = 8, T = 50). The mean
    of R such estimates within 5 standard errors of the RTS value; N = 4 particles.
    Quick: T = 20, R = 2,000; full: T = 50, R = 20,000.
    ``make(model, ys, additive_fn, num_particles)`` builds the PPG algorithm."""

    def measure(key, full: bool) -> Outcome:
        T, n, reps = (50, 4, 20_000) if full else (20, 4, 2000)
        k_data, k_run = jax.random.split(key)
        with jax.enable_x64(True):
            model = scalar_model()
            _, ys = smc.simulate(k_data, model, T)
            alg = make(model, ys, lag_one, n, backward="exact")

            @jax.jit
            def one(k):
                k_ref, k_sweep = jax.random.split(k)
                state = alg.init(smc.smoothing_sample(k_ref, model, ys))
                return alg.step(k_sweep, state)[1].sweep_estimate

            est = jax.vmap(one)(jax.random.split(k_run, reps))
            exact = exact_lag_one(model, ys)
        mean, se = _replicate_mean(est)
        return within(mean, exact, se, f"sum_t E[x_t x_t+1 | y] from one PPG sweep with an "
                      f"exact smoothing reference, T = {T}, N = {n}, {reps:,} replicates")

    return Check("ppg", "Cardoso2023", "unbiased at stationarity for any N", measure)


def checks() -> list[Check]:
    """The SMC checks, in the table's order."""
    return [paris_smoothing(), ppg_exact_reference()]

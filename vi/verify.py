"""Guarantee checks of FB-GVI (``samplers verify --method vi``), registered through the
``samplers.checks`` entry point ``vi = "vi.verify:checks"``.

Reference: [Diao2023]. The
target is a Gaussian N(mu, A^{-1}), where the best Gaussian q* is the target itself and both
guarantees have closed forms: the contraction factor (1 - alpha h) of Theorem 3.2 and the
stationary mean error h tr((2I - hA)^{-1}) of stochastic FB-GVI (Theorem 3.4's O(h)).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samplers.diagnostics import gaussian_w2
from samplers.run import run
from samplers.verify import Check, Outcome, at_most, mc_mean, within

from .fbgvi import fbgvi, sfbgvi
from .gaussian import Gaussian

KAPPA = 20.0  # condition number beta / alpha of the target's precision
# below this W2^2 the difference of traces in W2^2 (size ~ 1) carries relative rounding
# above 1e-8 in float64, so per-step ratios there say nothing about the method
W2_FLOOR = 1e-8


def gaussian_target(key, d: int, kappa: float = KAPPA):
    """Precision A with eigenvalues geomspace(1, kappa, d) in a random rotation, and a mean mu
    uniform on [0, 1]^d; returns (A, mu, eigenvalues) as float64 numpy arrays."""
    k_rot, k_mu = jax.random.split(key)
    rot = np.linalg.qr(np.asarray(jax.random.normal(k_rot, (d, d)), np.float64))[0]
    lam = np.geomspace(1.0, kappa, d)
    mu = np.asarray(jax.random.uniform(k_mu, (d,)), np.float64)
    return (rot * lam) @ rot.T, mu, lam


def quadratic_logdensity(A, mu) -> Callable:
    """log N(x; mu, A^{-1}) up to a constant."""
    def logdensity_fn(x):
        diff = x - jnp.asarray(mu, x.dtype)
        return -0.5 * diff @ (jnp.asarray(A, x.dtype) @ diff)
    return logdensity_fn


def w2_step_factors(w2sq) -> np.ndarray:
    """Per-step factors W2^2(q_{k+1}, pi) / W2^2(q_k, pi) while W2^2(q_k) is above the
    rounding floor ``W2_FLOOR`` ([Diao2023, Theorem 3.2] bounds each by 1 - alpha h)."""
    w2sq = np.asarray(w2sq, np.float64)
    keep = w2sq[:-1] > W2_FLOOR
    return w2sq[1:][keep] / w2sq[:-1][keep]


def fbgvi_contraction(make: Callable = fbgvi) -> Check:
    """[Diao2023, Theorem 3.2]: for alpha-strongly convex, beta-smooth V and h <= 1/beta,
    W2^2(q_{k+1}, q*) <= (1 - alpha h) W2^2(q_k, q*) at every step (q* = pi on a Gaussian).
    Measured at the theorem's largest step h = 1/beta with exact Gaussian expectations (exact
    Bures-Wasserstein iterates, float64) from q_0 = N(0, I): the largest per-step factor.
    ``make(logdensity_fn, step_size, expectation=...)`` builds the algorithm (BW-GD there
    cycles at h = 1/beta and fails)."""

    def measure(key, full: bool) -> Outcome:
        d, steps = (10, 400) if full else (5, 150)
        A, mu, lam = gaussian_target(key, d)
        h = 1.0 / lam.max()
        with jax.enable_x64(True):
            alg = make(quadratic_logdensity(A, mu), h, expectation="exact_gaussian")
            trace = run(key, alg, Gaussian.standard(d, jnp.float64), steps,
                        on_nonfinite="flag", progress=False)
            q = jax.tree.map(lambda x: x[0], trace.positions)  # (steps, ...): the one chain
            # W2 by samplers.diagnostics (Bures formula), not by the Gaussian's own method
            w2 = np.asarray(jax.vmap(gaussian_w2, (0, 0, None, None))(
                q.mean, q.cov, jnp.asarray(mu), jnp.asarray(np.linalg.inv(A)))) ** 2
        w2_0 = np.sum(mu ** 2) + np.sum((1 - 1 / np.sqrt(lam)) ** 2)
        factors = w2_step_factors(np.concatenate([[w2_0], w2]))
        return at_most(factors.max(), 1 - lam.min() * h,
                       f"max per-step W2^2 factor, d = {d}, kappa = {KAPPA:g}, h = 1/beta, "
                       f"{factors.size} of {steps} steps above W2^2 = {W2_FLOOR:g}",
                       "1 - alpha h")

    return Check("fbgvi", "Diao2023", "W2^2 contracts by (1 - alpha h) per step",
                 measure)


def stationary_mean_error(key, algorithm, A, mu, m0, steps: int) -> np.ndarray:
    """|m_k - mu|^2 for k = 1..steps of stochastic FB-GVI (``algorithm``, e.g.
    ``vi.sfbgvi(logdensity_fn, h)``), one ``samplers.run`` chain per row of the means ``m0``
    (chains, d), all from Sigma_0 = A^{-1} (kept exactly by the exact constant Hessian), in
    float32. Returns (chains, steps)."""
    dtype = jnp.float32
    m0 = jnp.asarray(m0, dtype)
    scale0 = jnp.asarray(Gaussian.from_cov(mu, np.linalg.inv(A)).scale, dtype)
    start = Gaussian(m0, jnp.broadcast_to(scale0, (m0.shape[0],) + scale0.shape))
    trace = run(key, algorithm, start, steps, num_chains=m0.shape[0], chain_axis=True,
                progress=False)
    means = np.asarray(trace.positions.mean, np.float64)
    return np.sum((means - np.asarray(mu, dtype).astype(np.float64)) ** 2, axis=-1)


def stationary_mean_law(A, h):
    """Covariance h (2I - hA)^{-1} of the stationary mean of stochastic FB-GVI on
    N(mu, A^{-1}) with the exact Hessian: the mean is the AR(1) recursion
    m' - mu = (I - hA)(m - mu) - h A^{1/2} u ([Diao2023, Algorithm 2] with one draw)."""
    return h * np.linalg.inv(2 * np.eye(A.shape[0]) - h * A)


def sfbgvi_stationary_error(make: Callable = sfbgvi) -> Check:
    """[Diao2023, Theorem 3.4]: stochastic FB-GVI converges to an O(h) neighbourhood of q*; on a
    Gaussian target the stationary E|m - mu|^2 is exactly h tr((2I - hA)^{-1}). Chains start
    from that stationary law, so every step counts. ``make(logdensity_fn, step_size)`` builds
    the algorithm, run by ``samplers.run``."""
    h = 0.02

    def measure(key, full: bool) -> Outcome:
        d, chains, steps = (10, 64, 4000) if full else (5, 32, 1000)
        k_target, k_init, k_run = jax.random.split(key, 3)
        A, mu, _ = gaussian_target(k_target, d)
        P = stationary_mean_law(A, h)
        m0 = mu + np.asarray(jax.random.normal(k_init, (chains, d)), np.float64) @ \
            np.linalg.cholesky(P).T
        algorithm = make(quadratic_logdensity(A, mu), h)
        err, se = mc_mean(stationary_mean_error(k_run, algorithm, A, mu, m0, steps))
        return within(err, np.trace(P), se,
                      f"stationary E|m - mu|^2, d = {d}, h = {h:g}, {chains} chains x "
                      f"{steps} steps")

    return Check("sfbgvi", "Diao2023", "O(h) stationary error, exact on a Gaussian",
                 measure)


def checks() -> list[Check]:
    """The FB-GVI checks, in the table's order."""
    return [fbgvi_contraction(), sfbgvi_stationary_error()]

"""Guarantee checks of FA-LD (``samplers verify --method federated``).

On quadratic clients f_c(x) = 1/2 (x - mu_c)^T A_c (x - mu_c) one communication round is a
linear Gaussian map x' = M x + b + e, e ~ N(0, Q), so FA-LD's stationary law, and with it
its bias to the posterior, has a closed form (derived on
docs/federated.md): the mean solves (I - M) m = b, the covariance S = M S M^T + Q.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np
from scipy.linalg import solve_discrete_lyapunov

from .. import federated
from ..run import run
from . import Check, Outcome, mc_mean, within


def round_map(A, mu, p, w, eta, K, rho):
    """(M, b, Q) of one FA-LD round for client precisions A (N, d, d), means mu (N, d),
    weights p, server weights w (w = p under full participation), K local steps of size
    eta and noise correlation rho ([Deng2024, Algorithm 1]; docs/federated.md). With
    G_c = I - eta A_c / p_c: M = sum_c w_c G_c^K, b = sum_c w_c (I - G_c^K) mu_c and
    Q = sum_j [2 eta rho^2 (sum_c w_c G_c^j)^2 + 2 eta (1 - rho^2) sum_c (w_c^2 / p_c) G_c^{2j}]."""
    d = A.shape[1]
    G = [np.eye(d) - eta * A[c] / p[c] for c in range(len(p))]
    Gk = [np.linalg.matrix_power(g, K) for g in G]
    M = sum(w[c] * Gk[c] for c in range(len(p)))
    b = sum(w[c] * (np.eye(d) - Gk[c]) @ mu[c] for c in range(len(p)))
    Q = np.zeros((d, d))
    for j in range(K):
        Gj = [np.linalg.matrix_power(g, j) for g in G]
        shared = sum(w[c] * Gj[c] for c in range(len(p)))
        Q += 2 * eta * rho ** 2 * shared @ shared.T
        Q += 2 * eta * (1 - rho ** 2) * sum(w[c] ** 2 / p[c] * Gj[c] @ Gj[c].T
                                            for c in range(len(p)))
    return M, b, Q


def stationary(A, mu, p, eta, K, rho):
    """FA-LD's exact stationary mean and covariance under full participation (docs/federated.md)."""
    M, b, Q = round_map(A, mu, p, p, eta, K, rho)
    return np.linalg.solve(np.eye(len(b)) - M, b), solve_discrete_lyapunov(M, Q)


def client_logdensities(A, mu) -> list:
    """The quadratic clients -1/2 (x - mu_c)^T A_c (x - mu_c) as log-densities."""
    return [lambda x, a=jnp.asarray(a, jnp.float32), m=jnp.asarray(m, jnp.float32):
            -0.5 * (x - m) @ a @ (x - m) for a, m in zip(A, mu)]


def fald_stationary_law(make: Callable = federated.fald) -> Check:
    """FA-LD's exact stationary law on two heterogeneous Gaussian clients
    (A = (1, 3), mu = (-1, 2), p = (1/2, 1/2); posterior N(1.25, 0.25)) with K = 5 local steps
    of eta = 0.05 and independent noise: the mean is biased to 1.0104 and the variance is
    0.3115 (the bias from local steps and heterogeneity of [Deng2024, Theorem 4.7], exact for
    quadratics). The measured E[(x - 1.25)^2] = var + bias^2 sees both.
    ``make(client_logdensities, local_steps, step_size, weights=)`` builds the sampler."""
    A, mu, p = np.array([[[1.0]], [[3.0]]]), np.array([[-1.0], [2.0]]), np.array([0.5, 0.5])
    eta, K, post_mean = 0.05, 5, 1.25

    def measure(key, full: bool) -> Outcome:
        chains, rounds = (500, 1000) if full else (100, 200)
        fed = make(client_logdensities(A, mu), K, eta, weights=p)
        trace = run(key, fed, jnp.ones(1), rounds, num_chains=chains, num_warmup=30,
                    progress=False)
        msq, se = mc_mean((np.asarray(trace.positions, np.float64)[..., 0] - post_mean) ** 2)
        m, S = stationary(A, mu, p, eta, K, 0.0)
        return within(msq, S[0, 0] + (m[0] - post_mean) ** 2, se,
                      f"E[(x - {post_mean:g})^2] (posterior 0.25), K = {K}, eta = {eta:g}, "
                      f"{chains} chains x {rounds} rounds")

    return Check("fald", "Deng2024", "exact stationary bias of local steps on "
                 "heterogeneous Gaussian clients", measure)


def checks() -> list[Check]:
    """The FA-LD checks."""
    return [fald_stationary_law()]

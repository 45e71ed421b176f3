"""The exact output law of an ODE solver on Gaussian data.

With Gaussian data and its exact (affine) score, every PF-ODE solver step is an affine map,
so ``solve_ode`` is an affine map x_T -> M x_T + c. Pushing 0 and the d unit vectors through
it recovers (M, c) exactly, and the law of the samples drawn from the prior N(0, prior_std^2 I)
is N(c, prior_std^2 M M^T): its W2 to the target p_{t_min} is exact, with no Monte Carlo error.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .scores import gaussian
from .solvers import _check_times, solve_ode

__all__ = ["affine_output_law", "gaussian_sampling_w2"]


def _law_from_images(sde, out):
    out = np.asarray(out, np.float64)
    c = out[0]
    m = (out[1:] - c).T  # column i = image of e_i minus image of 0
    return c, sde.prior_std ** 2 * m @ m.T


def affine_output_law(sde, score, dim, **solve_kwargs):
    """(mean, cov) of ``solve_ode(x_T, sde, score, **solve_kwargs)`` for x_T from the SDE's
    prior, valid when the solver is affine in x_T (any ODE solver with an affine score, e.g.
    :func:`diffusion.scores.gaussian`). Works in the ambient dtype (use float64 for small
    errors)."""
    basis = jnp.concatenate([jnp.zeros((1, dim)), jnp.eye(dim)], 0)
    return _law_from_images(sde, solve_ode(basis, sde, score, **solve_kwargs))


def _gaussian_w2(m1, s1, m2, s2):
    """W2 between N(m1, s1) and N(m2, s2) on the host in float64 [Dowson1982], the
    formula of :func:`samplers.diagnostics.gaussian_w2` without a device round trip."""
    m1, s1, m2, s2 = (np.asarray(a, np.float64) for a in (m1, s1, m2, s2))
    w, v = np.linalg.eigh(s2)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root @ s1 @ root
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (inner + inner.T)), 0, None)))
    return float(np.sqrt(max(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross, 0.0)))


def _target(sde, mean, cov, t_min):
    a, sg = float(sde.alpha(t_min)), float(sde.sigma(t_min))
    return a * mean, a ** 2 * np.asarray(cov) + sg ** 2 * np.eye(mean.shape[0])


def gaussian_sampling_w2(sde, mean, cov, **solve_kwargs):
    """Exact W2 between the law of PF-ODE samples (prior start, exact Gaussian score) and the
    target p_{t_min} = N(alpha mean, alpha^2 cov + sigma^2 I) at t = t_min."""
    mean = np.asarray(mean)
    score = gaussian(sde, mean, cov)
    c, s = affine_output_law(sde, score, mean.shape[0], **solve_kwargs)
    t_min, _ = _check_times(sde, solve_kwargs.get("t_min"), solve_kwargs.get("t_max"))
    tm, tc = _target(sde, mean, cov, t_min)
    return _gaussian_w2(c, s, tm, tc)

"""Score functions ``score(x, t) -> grad_x log p_t(x)`` for one point ``x`` of shape (d,)
and a scalar time ``t`` (the solvers vmap over points).

Exact scores of Gaussian and Gaussian-mixture data under a linear SDE (p_t is again Gaussian
or a Gaussian mixture: data N(mu, Sigma) gives p_t = N(alpha_t mu, alpha_t^2 Sigma +
sigma_t^2 I); [Song2021, App. B; Wang2024,
eq. 4]), and adapters from
noise-prediction (eps(x, t) = -sigma_t score; [Ho2020; Lu2022a, eq. 2.4]) and
denoiser (Tweedie: D(x, t) = (x + sigma_t^2 score) / alpha_t) networks.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["gaussian", "gaussian_mixture", "from_noise_predictor", "from_denoiser",
           "GaussianData", "gaussian_data", "gaussian_log_prob", "mixture_log_prob"]


class GaussianData(NamedTuple):
    """N(mean, cov) stored as ``mean`` (d,), eigenvalues ``evals`` (d,) and eigenvectors
    ``evecs`` (d, d) of ``cov`` (columns)."""

    mean: np.ndarray
    evals: np.ndarray
    evecs: np.ndarray


def gaussian_data(mean, cov, name="cov") -> GaussianData:
    """Validate ``mean`` (d,) and a symmetric PSD ``cov`` (d, d); return its eigendecomposition
    (computed once, in float64 on the host)."""
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mean.ndim != 1:
        raise ValueError(f"mean must have shape (d,), got shape {mean.shape}")
    d = mean.shape[0]
    if cov.shape != (d, d):
        raise ValueError(f"{name} must have shape ({d}, {d}) to match mean, got {cov.shape}")
    if not np.all(np.isfinite(cov)) or not np.allclose(cov, cov.T, rtol=1e-6, atol=1e-10):
        raise ValueError(f"{name} must be finite and symmetric")
    evals, evecs = np.linalg.eigh(cov)
    if evals.min() < -1e-10 * max(1.0, abs(evals.max())):
        raise ValueError(f"{name} must be positive semi-definite, got eigenvalue {evals.min():.3g}")
    return GaussianData(mean, np.clip(evals, 0.0, None), evecs)


def _gauss_parts(sde, g: GaussianData, x, t):
    """Whitened residual coordinates z = U^T (x - alpha_t mu) and variances v = alpha_t^2 l + sigma_t^2."""
    dtype = jnp.result_type(x)
    mu, lam, u = (jnp.asarray(a, dtype) for a in g)
    a, s = sde.alpha(t), sde.sigma(t)
    z = u.T @ (x - a * mu)
    v = a ** 2 * lam + s ** 2
    return z, v, u


def gaussian(sde, mean, cov) -> Callable:
    """Exact score of p_t for data N(mean, cov):
    ``-(alpha_t^2 cov + sigma_t^2 I)^{-1} (x - alpha_t mean)``, applied in cov's eigenbasis
    [Wang2024, eq. 4]. ``mean`` (d,), ``cov`` (d, d) symmetric PSD."""
    g = gaussian_data(mean, cov)

    def score(x, t):
        z, v, u = _gauss_parts(sde, g, x, t)
        return -u @ (z / v)

    score.gaussian_data = g
    score.dim = g.mean.shape[0]
    return score


def gaussian_log_prob(sde, mean, cov) -> Callable:
    """``log p_t(x)`` for data N(mean, cov) (one point x of shape (d,), scalar t)."""
    g = gaussian_data(mean, cov)

    def logp(x, t):
        z, v, _ = _gauss_parts(sde, g, x, t)
        return -0.5 * jnp.sum(z ** 2 / v + jnp.log(v)) - 0.5 * z.shape[0] * math.log(2 * math.pi)

    return logp


def _mixture_data(weights, means, covs):
    w = np.asarray(weights, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    covs = np.asarray(covs, dtype=np.float64)
    if w.ndim != 1 or not np.all(w >= 0) or not w.sum() > 0:
        raise ValueError(f"weights must be a (k,) vector of non-negative numbers with a positive "
                         f"sum, got {weights!r}")
    k = w.shape[0]
    if means.ndim != 2 or means.shape[0] != k:
        raise ValueError(f"means must have shape ({k}, d) to match weights, got {means.shape}")
    d = means.shape[1]
    if covs.shape != (k, d, d):
        raise ValueError(f"covs must have shape ({k}, {d}, {d}), got {covs.shape}")
    comps = [gaussian_data(means[i], covs[i], name=f"covs[{i}]") for i in range(k)]
    return (np.log(w / w.sum()), np.stack([c.mean for c in comps]),
            np.stack([c.evals for c in comps]), np.stack([c.evecs for c in comps]))


def _mixture_terms(sde, data, x, t):
    logw, mus, lams, us = (jnp.asarray(a, jnp.result_type(x)) for a in data)
    a, s = sde.alpha(t), sde.sigma(t)
    z = jnp.einsum("kij,ki->kj", us, x[None] - a * mus)        # (k, d)
    v = a ** 2 * lams + s ** 2                                 # (k, d)
    logn = -0.5 * jnp.sum(z ** 2 / v + jnp.log(v), -1) - 0.5 * x.shape[0] * math.log(2 * math.pi)
    return logw + logn, z, v, us


def gaussian_mixture(sde, weights, means, covs) -> Callable:
    """Exact score of p_t for data sum_k w_k N(means[k], covs[k]):
    sum_k r_k(x) (alpha_t^2 Sigma_k + sigma_t^2 I)^{-1} (alpha_t mu_k - x), with
    responsibilities r = softmax_k(log w_k + log N(x; alpha_t mu_k, alpha_t^2 Sigma_k +
    sigma_t^2 I)) computed in log space (log-determinants kept). ``weights`` (k,) (normalised
    here), ``means`` (k, d), ``covs`` (k, d, d)."""
    data = _mixture_data(weights, means, covs)

    def score(x, t):
        logits, z, v, us = _mixture_terms(sde, data, x, t)
        r = jax.nn.softmax(logits)
        comp = -jnp.einsum("kij,kj->ki", us, z / v)
        return r @ comp

    score.mixture_data = data
    score.dim = data[1].shape[1]
    return score


def mixture_log_prob(sde, weights, means, covs) -> Callable:
    """``log p_t(x)`` for Gaussian-mixture data (one point x (d,), scalar t)."""
    data = _mixture_data(weights, means, covs)

    def logp(x, t):
        return jax.nn.logsumexp(_mixture_terms(sde, data, x, t)[0])

    return logp


def from_noise_predictor(sde, eps_fn: Callable) -> Callable:
    """Score from a noise predictor: ``score(x, t) = -eps_fn(x, t) / sigma_t``
    [Lu2022a, eq. 2.4 and Sec. 2]."""
    if not callable(eps_fn):
        raise TypeError(f"eps_fn must be callable eps_fn(x, t), got {eps_fn!r}")

    def score(x, t):
        return -eps_fn(x, t) / sde.sigma(t)

    return score


def from_denoiser(sde, denoiser: Callable) -> Callable:
    """Score from a denoiser D(x, t) = E[x_0 | x_t = x] (Tweedie's formula):
    ``score(x, t) = (alpha_t D(x, t) - x) / sigma_t^2``."""
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable denoiser(x, t), got {denoiser!r}")

    def score(x, t):
        return (sde.alpha(t) * denoiser(x, t) - x) / sde.sigma(t) ** 2

    return score

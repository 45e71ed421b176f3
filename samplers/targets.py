"""Targets with known answers, for testing and benchmarking samplers.

Every factory returns a :class:`Target`: a log-density over a flat vector of dimension
``dim`` together with what is known about the law -- its exact mean and covariance and an
exact sampler where they exist, or (Bayesian logistic regression) a numerical reference
computed independently of any Markov chain, with its Monte Carlo standard error.

Factories check their arguments eagerly (they are not meant to be called under ``jit``)
and raise ValueError/TypeError naming the argument. The constants a target closes over
are converted once with ``jnp.asarray``, so a target built inside
``jax.enable_x64(True)`` works in float64 and one built outside in float32. The returned
functions are pure and can be jitted, vmapped and differentiated; ``sample(key, n)``
needs a static Python int ``n``.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.special
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from .validation import check_int, check_positive, check_shape

__all__ = [
    "Target", "gaussian", "gaussian_mixture", "bayesian_linear_regression",
    "make_linear_regression", "bayesian_logistic_regression", "dirichlet", "banana", "funnel",
]

_LOG_2PI = math.log(2.0 * math.pi)


class Target(NamedTuple):
    """A target law over R^dim and what is known about it.

    Attributes:
      name: short identifier ("gaussian", "banana", ...).
      dim: dimension d of a position.
      logdensity_fn: ``position (d,) -> scalar`` log-density, up to an additive constant
        for the regression posteriors (normalised for the others).
      mean: exact mean, shape (d,), or a numerical reference (see ``reference``), or None.
      cov: exact covariance, shape (d, d), or a numerical reference, or None.
      sample: ``(key, n) -> (n, d)`` exact i.i.d. draws, or None when no exact sampler exists.
      logprior_fn: ``position -> scalar`` log prior (regression targets), else None.
      loglik_fn: per-datum ``(position, datum) -> scalar`` log-likelihood, where ``datum``
        is one slice of ``data`` along its leading axis (regression targets), else None.
        ``logdensity_fn(w) == logprior_fn(w) + sum_i loglik_fn(w, data_i)``, so an unbiased
        minibatch estimate is ``logprior_fn(w) + n / B * sum_{i in batch} loglik_fn(w, data_i)``.
      data: pytree whose leaves share a leading datum axis (``(X, y)``), else None.
      reference: None when ``mean`` and ``cov`` are exact; otherwise a dict describing the
        numerical reference: ``method`` (str), ``mean_se`` (d,) and ``cov_se`` (d, d) Monte
        Carlo standard errors of ``mean`` and ``cov``, ``ess`` (the importance sampling
        effective sample size), ``num_draws``, ``mode`` (d,) and ``laplace_cov`` (d, d).
    """

    name: str
    dim: int
    logdensity_fn: Callable[[jax.Array], jax.Array]
    mean: Optional[jax.Array]
    cov: Optional[jax.Array]
    sample: Optional[Callable[[jax.Array, int], jax.Array]]
    logprior_fn: Optional[Callable[[jax.Array], jax.Array]] = None
    loglik_fn: Optional[Callable[[jax.Array, Any], jax.Array]] = None
    data: Any = None
    reference: Optional[dict] = None


# ------------------------------------------------------------------------- validation

def _real_array(name: str, value, ndim: int) -> np.ndarray:
    """``value`` as a finite float64 numpy array with ``ndim`` dimensions."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:  # tracers raise a TypeError subclass
        raise TypeError(
            f"{name} must be a concrete real array (targets are built outside jit), "
            f"got {type(value).__name__}"
        ) from err
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must have finite entries, got {arr!r}")
    return arr


def _spd_cholesky(name: str, cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a symmetric positive-definite ``cov`` (float64)."""
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {cov.shape}")
    scale = np.max(np.abs(cov), initial=0.0)
    if np.max(np.abs(cov - cov.T), initial=0.0) > 1e-6 * scale:
        raise ValueError(f"{name} must be symmetric, got {cov!r}")
    try:
        return np.linalg.cholesky(0.5 * (cov + cov.T))
    except np.linalg.LinAlgError:
        smallest = np.linalg.eigvalsh(0.5 * (cov + cov.T))[0]
        raise ValueError(
            f"{name} must be positive definite, got a matrix with smallest eigenvalue "
            f"{smallest:.3g}"
        ) from None


def _regression_data(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = _real_array("X", X, 2)
    y = _real_array("y", y, 1)
    check_shape("y", y, (X.shape[0],))
    return X, y


# -------------------------------------------------------------------- log-density pieces

def _normal_logpdf(x, scale):
    """Log-density of N(0, scale^2) at ``x``, elementwise."""
    return -0.5 * jnp.square(x / scale) - jnp.log(scale) - 0.5 * _LOG_2PI


def _mvn_logpdf(x, mean, chol):
    """Log-density of N(mean, chol chol^T) at ``x`` (d,), with ``chol`` lower triangular."""
    z = solve_triangular(chol, x - mean, lower=True)
    return -0.5 * jnp.dot(z, z) - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * x.shape[-1] * _LOG_2PI


def _posterior_logdensity(logprior_fn, loglik_fn, data):
    """``w -> logprior_fn(w) + sum_i loglik_fn(w, data_i)``."""
    def logdensity_fn(position):
        return logprior_fn(position) + jnp.sum(jax.vmap(loglik_fn, (None, 0))(position, data))
    return logdensity_fn


def _jit_sampler(sample):
    """``sample(key, n)`` compiled as one computation per static ``n``."""
    return jax.jit(sample, static_argnums=1)


def _gaussian_prior(prior_scale):
    def logprior_fn(position):
        return jnp.sum(_normal_logpdf(position, prior_scale))
    return logprior_fn


# ---------------------------------------------------------------------------- targets

def gaussian(mean, cov) -> Target:
    """Multivariate normal N(mean, cov).

    Args:
      mean: shape (d,).
      cov: shape (d, d), symmetric positive definite.

    The log-density is evaluated through the Cholesky factor L of ``cov`` (computed once,
    in float64): log N(x) = -|L^{-1}(x - mean)|^2 / 2 - sum_i log L_ii - d/2 log(2 pi).
    ``sample`` draws mean + L z with z ~ N(0, I).
    """
    mean_np = _real_array("mean", mean, 1)
    cov_np = _real_array("cov", cov, 2)
    check_shape("cov", cov_np, (mean_np.size, mean_np.size))
    mean_j, cov_j = jnp.asarray(mean_np), jnp.asarray(cov_np)
    chol = jnp.asarray(_spd_cholesky("cov", cov_np))

    def logdensity_fn(position):
        return _mvn_logpdf(position, mean_j, chol)

    def sample(key, n):
        z = jax.random.normal(key, (n, mean_j.size), mean_j.dtype)
        return mean_j + z @ chol.T

    return Target("gaussian", mean_np.size, logdensity_fn, mean_j, cov_j, _jit_sampler(sample))


def gaussian_mixture(weights, means, covs) -> Target:
    """Finite mixture sum_k w_k N(means[k], covs[k]).

    Args:
      weights: shape (K,), non-negative, summing to one (to 1e-6).
      means: shape (K, d).
      covs: shape (K, d, d), each symmetric positive definite.

    Exact moments by the laws of total expectation and variance:
    mean = sum_k w_k m_k, cov = sum_k w_k (S_k + m_k m_k^T) - mean mean^T.
    The log-density is logsumexp_k(log w_k + log N(x; m_k, S_k)); ``sample`` draws a
    component index from the weights, then an exact Gaussian draw from that component.
    """
    w = _real_array("weights", weights, 1)
    if np.any(w < 0) or abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"weights must be non-negative and sum to 1, got {w!r} (sum {w.sum()})")
    m = _real_array("means", means, 2)
    check_shape("means", m, (w.size, m.shape[1]))
    d = m.shape[1]
    s = _real_array("covs", covs, 3)
    check_shape("covs", s, (w.size, d, d))
    chols = jnp.asarray(np.stack([_spd_cholesky(f"covs[{k}]", s[k]) for k in range(w.size)]))
    w = w / w.sum()
    mean = w @ m
    cov = np.einsum("k,kij->ij", w, s + np.einsum("ki,kj->kij", m, m)) - np.outer(mean, mean)
    log_w, m_j = jnp.log(jnp.asarray(w)), jnp.asarray(m)

    def logdensity_fn(position):
        return logsumexp(log_w + jax.vmap(_mvn_logpdf, (None, 0, 0))(position, m_j, chols))

    def sample(key, n):
        key_k, key_z = jax.random.split(key)
        k = jax.random.categorical(key_k, log_w, shape=(n,))
        z = jax.random.normal(key_z, (n, d), m_j.dtype)
        return m_j[k] + jnp.einsum("nij,nj->ni", chols[k], z)

    return Target("gaussian_mixture", d, logdensity_fn, jnp.asarray(mean), jnp.asarray(cov),
                  _jit_sampler(sample))


def bayesian_linear_regression(X, y, noise_scale, prior_scale) -> Target:
    """Posterior of w in y_i = x_i . w + noise_scale e_i, e_i ~ N(0, 1), w ~ N(0, prior_scale^2 I).

    Args:
      X: design matrix, shape (n, d).
      y: responses, shape (n,).
      noise_scale, prior_scale: positive floats.

    The posterior is Gaussian with precision P = X^T X / noise_scale^2 + I / prior_scale^2,
    covariance P^{-1} and mean P^{-1} X^T y / noise_scale^2 (computed in float64; e.g.
    [Bishop2006, eqs. 3.53-3.54]). ``logdensity_fn`` is the unnormalised log posterior
    ``logprior_fn(w) + sum_i loglik_fn(w, (X[i], y[i]))``; ``data = (X, y)`` so that a
    minibatch gradient estimator (SGLD) can be built from ``logprior_fn`` and ``loglik_fn``.
    ``sample`` draws exactly from the posterior.
    """
    X, y = _regression_data(X, y)
    check_positive("noise_scale", noise_scale)
    check_positive("prior_scale", prior_scale)
    noise_scale, prior_scale = float(noise_scale), float(prior_scale)
    d = X.shape[1]
    precision = X.T @ X / noise_scale**2 + np.eye(d) / prior_scale**2
    cov = np.linalg.inv(precision)
    posterior = gaussian(cov @ X.T @ y / noise_scale**2, 0.5 * (cov + cov.T))

    def loglik_fn(position, datum):
        x_i, y_i = datum
        return _normal_logpdf(y_i - jnp.dot(x_i, position), noise_scale)

    logprior_fn = _gaussian_prior(prior_scale)
    data = (jnp.asarray(X), jnp.asarray(y))
    return Target(
        "bayesian_linear_regression", d, _posterior_logdensity(logprior_fn, loglik_fn, data),
        posterior.mean, posterior.cov, posterior.sample, logprior_fn, loglik_fn, data,
    )


def make_linear_regression(key, n: int, d: int, noise_scale=1.0, prior_scale=1.0) -> Target:
    """Simulate a dataset from the linear-regression model and return its posterior target.

    Draws X (n, d) with i.i.d. N(0, 1) entries, w ~ N(0, prior_scale^2 I) and
    y = X w + noise_scale * N(0, I_n); returns ``bayesian_linear_regression(X, y, ...)``
    (the dataset is its ``data`` field).
    """
    n = check_int("n", n)
    d = check_int("d", d)
    check_positive("noise_scale", noise_scale)
    check_positive("prior_scale", prior_scale)
    X, y = _simulate_linear_regression(key, n, d, noise_scale, prior_scale)
    return bayesian_linear_regression(X, y, noise_scale, prior_scale)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _simulate_linear_regression(key, n, d, noise_scale, prior_scale):
    key_x, key_w, key_e = jax.random.split(key, 3)
    X = jax.random.normal(key_x, (n, d))
    w = prior_scale * jax.random.normal(key_w, (d,))
    return X, X @ w + noise_scale * jax.random.normal(key_e, (n,))


def _logistic_logpost(theta: np.ndarray, X: np.ndarray, y: np.ndarray, prior_scale: float,
                      chunk: int = 8192) -> np.ndarray:
    """Unnormalised log posterior at each row of ``theta`` (m, d), in float64 numpy."""
    out = np.empty(theta.shape[0])
    for start in range(0, theta.shape[0], chunk):
        t = theta[start:start + chunk]
        eta = t @ X.T
        loglik = eta @ y - np.logaddexp(0.0, eta).sum(axis=1)
        out[start:start + chunk] = loglik - 0.5 * np.sum(t**2, axis=1) / prior_scale**2
    return out


def _logistic_laplace(X, y, prior_scale) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mode (trust-region Newton) and the Laplace covariance (inverse Hessian)."""
    d = X.shape[1]

    def hessian(w):
        p = scipy.special.expit(X @ w)
        return (X.T * (p * (1.0 - p))) @ X + np.eye(d) / prior_scale**2

    def objective(w):
        eta = X @ w
        value = np.logaddexp(0.0, eta).sum() - eta @ y + 0.5 * w @ w / prior_scale**2
        grad = X.T @ (scipy.special.expit(eta) - y) + w / prior_scale**2
        return value, grad

    result = scipy.optimize.minimize(objective, np.zeros(d), jac=True, hess=hessian,
                                     method="trust-exact", options={"gtol": 1e-10})
    return result.x, np.linalg.inv(hessian(result.x))


def _logistic_reference(X, y, prior_scale, num_draws, df, seed) -> dict:
    """Self-normalised importance sampling with a Laplace-centred multivariate Student-t.

    The proposal is t_df(mode, laplace_cov). The posterior tails are Gaussian (Gaussian
    prior, bounded likelihood) while the proposal's are polynomial, so the importance
    weights are bounded and the estimator has finite variance. Standard errors use the
    delta method for a ratio estimator: se(f) = sqrt(sum_i W_i^2 (f(x_i) - E_W f)^2) with
    normalised weights W [Owen2013, ch. 9].
    """
    mode, laplace_cov = _logistic_laplace(X, y, prior_scale)
    d = mode.size
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num_draws, d))
    g = rng.chisquare(df, num_draws) / df
    draws = mode + (z @ np.linalg.cholesky(laplace_cov).T) / np.sqrt(g)[:, None]
    log_q = -0.5 * (df + d) * np.log1p(np.sum(z**2, axis=1) / g / df)
    log_w = _logistic_logpost(draws, X, y, prior_scale) - log_q
    weights = np.exp(log_w - log_w.max())
    weights /= weights.sum()
    mean = weights @ draws
    centred = draws - mean
    outer = centred[:, :, None] * centred[:, None, :]
    cov = np.einsum("n,nij->ij", weights, outer)
    return {
        "method": f"self-normalised importance sampling, Student-t({df}) Laplace proposal",
        "mean": mean,
        "cov": cov,
        "mean_se": np.sqrt(weights**2 @ centred**2),
        "cov_se": np.sqrt(np.einsum("n,nij->ij", weights**2, (outer - cov) ** 2)),
        "ess": 1.0 / np.sum(weights**2),
        "num_draws": num_draws,
        "mode": mode,
        "laplace_cov": laplace_cov,
    }


def bayesian_logistic_regression(X, y, prior_scale, *, num_draws: int = 100_000,
                                 df: float = 5.0, seed: int = 0) -> Target:
    """Posterior of w in P(y_i = 1 | x_i) = sigmoid(x_i . w), w ~ N(0, prior_scale^2 I).

    Args:
      X: design matrix, shape (n, d).
      y: labels in {0, 1}, shape (n,).
      prior_scale: positive float.
      num_draws, df, seed: importance-sampling draws, Student-t degrees of freedom and numpy
        seed of the reference computation.

    No closed form exists; ``mean`` and ``cov`` are a reference computed in float64 numpy,
    independently of any MCMC code, by self-normalised importance sampling from a
    Student-t proposal centred at the posterior mode with the Laplace covariance (the
    inverse Hessian of the negative log posterior at the mode). ``reference`` holds the
    Monte Carlo standard errors (``mean_se``, ``cov_se``), the importance ESS, the mode and
    the Laplace covariance (see :class:`Target`). A UserWarning is issued when the ESS is
    below 10% of ``num_draws``. Cost: about ``num_draws * n * d`` flops (well under a
    second for d <= 5, n <= 200 with the defaults). ``sample`` is None.

    ``logdensity_fn`` is ``logprior_fn(w) + sum_i loglik_fn(w, (X[i], y[i]))`` with
    ``loglik_fn = y_i * eta - log(1 + e^eta)``, eta = x_i . w.
    """
    X, y = _regression_data(X, y)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"y must contain only 0 and 1, got values {np.unique(y)!r}")
    check_positive("prior_scale", prior_scale)
    num_draws = check_int("num_draws", num_draws, minimum=2)
    check_positive("df", df)
    prior_scale = float(prior_scale)
    reference = _logistic_reference(X, y, prior_scale, num_draws, float(df), seed)
    if reference["ess"] < 0.1 * num_draws:
        warnings.warn(
            f"importance-sampling reference has ESS {reference['ess']:.0f} out of {num_draws} "
            "draws; its standard errors may be unreliable", stacklevel=2,
        )

    def loglik_fn(position, datum):
        x_i, y_i = datum
        eta = jnp.dot(x_i, position)
        return y_i * eta - jnp.logaddexp(0.0, eta)

    logprior_fn = _gaussian_prior(prior_scale)
    data = (jnp.asarray(X), jnp.asarray(y))
    return Target(
        "bayesian_logistic_regression", X.shape[1],
        _posterior_logdensity(logprior_fn, loglik_fn, data),
        jnp.asarray(reference.pop("mean")), jnp.asarray(reference.pop("cov")), None,
        logprior_fn, loglik_fn, data, reference,
    )


def dirichlet(alpha) -> Target:
    """Dirichlet(alpha) on the simplex, over its K - 1 free coordinates.

    Args:
      alpha: concentrations, shape (K,), K >= 2, all > 0.

    A position theta has shape (K - 1,); theta_K = 1 - sum(theta). The log-density (with
    respect to Lebesgue measure on the free coordinates) is
    sum_k (alpha_k - 1) log theta_k - log B(alpha), and -inf outside the open simplex.
    Exact moments of the free coordinates, with a0 = sum(alpha):
    mean_i = alpha_i / a0, cov_ij = (a0 alpha_i delta_ij - alpha_i alpha_j) / (a0^2 (a0 + 1)).
    ``sample`` drops the last coordinate of ``jax.random.dirichlet`` draws (which can
    underflow to the boundary in float32 when some alpha_k << 1).
    """
    a = _real_array("alpha", alpha, 1)
    if a.size < 2 or np.any(a <= 0):
        raise ValueError(f"alpha must have K >= 2 entries, all > 0, got {a!r}")
    a0 = a.sum()
    free = a[:-1]
    mean = free / a0
    cov = (a0 * np.diag(free) - np.outer(free, free)) / (a0**2 * (a0 + 1.0))
    log_norm = float(np.sum(scipy.special.gammaln(a)) - scipy.special.gammaln(a0))
    alpha_j = jnp.asarray(a)

    def logdensity_fn(position):
        full = jnp.append(position, 1.0 - jnp.sum(position))
        inside = jnp.all(full > 0)
        safe = jnp.where(inside, full, 1.0)  # keeps log and its gradient finite outside
        value = jnp.sum((alpha_j - 1.0) * jnp.log(safe)) - log_norm
        return jnp.where(inside, value, -jnp.inf)

    def sample(key, n):
        return jax.random.dirichlet(key, alpha_j, shape=(n,))[:, :-1]

    return Target("dirichlet", a.size - 1, logdensity_fn, jnp.asarray(mean), jnp.asarray(cov),
                  _jit_sampler(sample))


def banana(b: float = 0.1, sigma1: float = 10.0) -> Target:
    """The twisted Gaussian ("banana") of [Haario1999] in two dimensions.

    x1 ~ N(0, sigma1^2) and x2 | x1 ~ N(-b (x1^2 - sigma1^2), 1) ([Haario1999], the
    "twisted Gaussian" test target).

    Exact moments: E x1 = 0 and E x2 = -b (E x1^2 - sigma1^2) = 0; Var x1 = sigma1^2;
    Cov(x1, x2) = -b E[x1^3] = 0; Var x2 = b^2 Var(x1^2) + 1 = 2 b^2 sigma1^4 + 1.
    """
    try:
        b = float(b)
    except (TypeError, ValueError):
        raise TypeError(f"b must be a real number, got {b!r}") from None
    if not math.isfinite(b):
        raise ValueError(f"b must be finite, got {b!r}")
    check_positive("sigma1", sigma1)
    sigma1 = float(sigma1)

    def logdensity_fn(position):
        x1, x2 = position[0], position[1]
        return _normal_logpdf(x1, sigma1) + _normal_logpdf(x2 + b * (x1**2 - sigma1**2), 1.0)

    def sample(key, n):
        z = jax.random.normal(key, (n, 2))
        x1 = sigma1 * z[:, 0]
        return jnp.stack([x1, z[:, 1] - b * (x1**2 - sigma1**2)], axis=1)

    mean = jnp.zeros(2)
    cov = jnp.diag(jnp.asarray([sigma1**2, 2.0 * b**2 * sigma1**4 + 1.0]))
    return Target("banana", 2, logdensity_fn, mean, cov, _jit_sampler(sample))


def funnel(d: int = 10, scale: float = 3.0) -> Target:
    """Neal's funnel in dimension d: v ~ N(0, scale^2), x_i | v ~ N(0, e^v), i = 1..d-1.

    A position is (v, x_1, ..., x_{d-1}) [Neal2003].
    Exact moments: mean 0; Var v = scale^2; Var x_i = E e^v = e^{scale^2 / 2}; all
    covariances are 0 (x_i is conditionally centred given v).
    """
    d = check_int("d", d, minimum=2)
    check_positive("scale", scale)
    scale = float(scale)

    def logdensity_fn(position):
        v, x = position[0], position[1:]
        return _normal_logpdf(v, scale) + jnp.sum(_normal_logpdf(x, jnp.exp(0.5 * v)))

    def sample(key, n):
        z = jax.random.normal(key, (n, d))
        v = scale * z[:, :1]
        return jnp.concatenate([v, jnp.exp(0.5 * v) * z[:, 1:]], axis=1)

    variances = np.full(d, math.exp(0.5 * scale**2))
    variances[0] = scale**2
    return Target("funnel", d, logdensity_fn, jnp.zeros(d), jnp.diag(jnp.asarray(variances)),
                  _jit_sampler(sample))

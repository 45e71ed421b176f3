"""Sliced Wasserstein estimators with control variates [Nguyen2024].

For measures mu, nu on R^d and p >= 1, SW_p^p(mu, nu) = E_{theta ~ U(S^{d-1})}
W_p^p(theta#mu, theta#nu) (paper, eq. 1), estimated from L directions theta_l by

* plain Monte Carlo: (1/L) sum_l W_l, W_l = W_p^p(theta_l#mu, theta_l#nu);
* control variates (paper, section 3): with the Gaussian fits of the projections,
  C_low(theta) = (theta^T (m_mu - m_nu))^2 (the lower bound, paper eq. 8) and
  C_up(theta) = C_low + theta^T S_mu theta + theta^T S_nu theta (the upper bound, eq. 10),
  whose means over theta are |m_mu - m_nu|^2 / d and (|m_mu - m_nu|^2 + tr S_mu + tr S_nu) / d
  (Propositions 1-2, from E[theta theta^T] = I / d); the estimate is
  (1/L) sum_l [W_l - gamma (C_l - E C)] (eqs. 9 and 11).

Everything a control variate needs is read off the projections already computed (the mean and
variance of theta^T x), so no d x d matrix is ever formed: the cost is O(L n (d + log n)).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ._checks import _check_directions, _check_key, _check_options, _check_points, _check_weights
from .one_dim import _projected_w
from .projections import _directions

__all__ = ["SlicedEstimate", "sliced_wasserstein", "sliced_wasserstein_estimate"]

MIN_CV_PROJECTIONS = 4  # below this a coefficient fitted from the directions is unstable


class SlicedEstimate(NamedTuple):
    """A sliced Wasserstein estimate (scalars, or arrays of shape (B,) for B pairs).

    Attributes:
      value: the estimate of SW_p^p (the p-th power; the scale on which the Monte Carlo
        average, its standard error and unbiasedness live).
      stderr: standard error of ``value`` from the per-direction residuals
        W_l - gamma (C_l - E C) (the i.i.d. formula for scheme "mc", the spread of block
        means for "orthogonal", NaN for "qmc": repeat over keys instead).
      variance_factor: Var(W_l) / Var(residual_l), the variance reduction measured on the
        directions used (1 without a control variate).
      distance: SW_p = max(value, 0)^(1/p) (what :func:`sliced_wasserstein` returns).
      plain: the plain Monte Carlo estimate from the same directions.
      gamma: the control-variate coefficient used (0 without one).
    """

    value: jax.Array
    stderr: jax.Array
    variance_factor: jax.Array
    distance: jax.Array
    plain: jax.Array
    gamma: jax.Array


def _moments(points, proj, w):
    """Weighted mean (d,), trace of the (1/n) covariance, and the projections' means and
    variances (L,) -- the Gaussian fit of every theta#mu without a d x d matrix."""
    w = jnp.full(points.shape[0], 1.0 / points.shape[0], points.dtype) if w is None \
        else w / jnp.sum(w)
    mean = w @ points
    trace = w @ jnp.sum((points - mean) ** 2, axis=1)
    pmean = proj @ w
    pvar = ((proj - pmean[:, None]) ** 2) @ w
    return mean, trace, pmean, pvar


def _safe_ratio(num, den):
    """num / den, 0 where den == 0, with finite gradients."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _ols_gamma(w, c):
    wc, cc = w - jnp.mean(w), c - jnp.mean(c)
    return _safe_ratio(jnp.sum(wc * cc), jnp.sum(cc * cc))


def _coefficient(w, c_dev, coefficient):
    """gamma and the (L,) residuals w_l - gamma_l c_dev_l, c_dev = C - E C.

    ols: gamma = sum (W - mean W)(C - mean C) / sum (C - mean C)^2 (the estimate is the
      intercept of the least-squares fit of W on C - E C; exact when W is affine in C).
    reference: gamma = mean((W - mean W)(C - E C)) / mean((C - E C)^2), the coefficient of the
      authors' code [Nguyen2024, eq. 9] with the plug-in moments.
    crossfit: gamma from each half of the directions applied to the other half (the
      reported gamma is their average); unbiased for i.i.d. directions.
    """
    if coefficient == "ols":
        gamma = _ols_gamma(w, c_dev)
        return gamma, w - gamma * c_dev
    if coefficient == "reference":
        gamma = _safe_ratio(jnp.mean((w - jnp.mean(w)) * c_dev), jnp.mean(c_dev**2))
        return gamma, w - gamma * c_dev
    half = w.shape[0] // 2
    g1 = _ols_gamma(w[:half], c_dev[:half])
    g2 = _ols_gamma(w[half:], c_dev[half:])
    res = jnp.concatenate([w[:half] - g2 * c_dev[:half], w[half:] - g1 * c_dev[half:]])
    return 0.5 * (g1 + g2), res


def _stderr(res, ddof, scheme, dim):
    num = res.shape[0]
    if scheme == "qmc":
        return jnp.full((), jnp.nan, res.dtype)
    if scheme == "orthogonal":
        blocks = num // dim
        if blocks < 2 or num % dim:
            return jnp.full((), jnp.nan, res.dtype)
        means = jnp.mean(res.reshape(blocks, dim), axis=1)
        return jnp.std(means, ddof=1) / math.sqrt(blocks)
    if num - ddof < 1:
        return jnp.full((), jnp.nan, res.dtype)
    return jnp.sqrt(jnp.sum((res - jnp.mean(res)) ** 2) / (num - ddof) / num)


def _root(value, p):
    pos = value > 0
    return jnp.where(pos, jnp.where(pos, value, 1.0) ** (1.0 / p), 0.0)


def _terms(x, y, a, b, theta, p, control_variate):
    """(L,) W_l and, with a control variate, (L,) C_l - E C (else None)."""
    px, py = theta @ x.T, theta @ y.T                      # O(L n d)
    w = _projected_w(px, py, a, b, p)                       # O(L n log n)
    if control_variate is None:
        return w, None
    mx, tx, pmx, pvx = _moments(x, px, a)
    my, ty, pmy, pvy = _moments(y, py, b)
    dim = theta.shape[1]
    c = (pmx - pmy) ** 2
    mean_c = jnp.sum((mx - my) ** 2) / dim
    if control_variate == "upper":
        c = c + pvx + pvy
        mean_c = mean_c + (tx + ty) / dim
    return w, c - mean_c


def _summarise(w, res, gamma, ddof, p, scheme, dim):
    value = jnp.mean(res)
    se = _stderr(res, ddof, scheme, dim)
    if res.shape[0] > 1:
        var_w, var_r = jnp.var(w), jnp.var(res)
        factor = jnp.where((var_r == 0) & (var_w > 0), jnp.inf, _safe_ratio(var_w, var_r))
        factor = jnp.where((var_r == 0) & (var_w == 0), 1.0, factor)
    else:
        factor = jnp.ones((), w.dtype)
    return SlicedEstimate(value, se, factor, _root(value, p), jnp.mean(w), gamma)


def _estimate_pair(x, y, a, b, theta, p, control_variate, coefficient, scheme):
    """One pair: x (n, d), y (m, d), weights or None, theta (L, d)."""
    num, dim = theta.shape
    if num < MIN_CV_PROJECTIONS:
        control_variate = None
    w, c_dev = _terms(x, y, a, b, theta, p, control_variate)
    if c_dev is None:
        return _summarise(w, w, jnp.zeros((), w.dtype), 1, p, scheme, dim)
    gamma, res = _coefficient(w, c_dev, coefficient)
    return _summarise(w, res, gamma, 2 if coefficient == "ols" else 1, p, scheme, dim)


@functools.partial(jax.jit, static_argnames=("p", "control_variate", "coefficient", "scheme",
                                             "batched_x", "batched_y", "batched_a", "batched_b"))
def _estimate(x, y, a, b, theta, *, p, control_variate, coefficient, scheme,
              batched_x, batched_y, batched_a, batched_b):
    fn = functools.partial(_estimate_pair, theta=theta, p=p, control_variate=control_variate,
                           coefficient=coefficient, scheme=scheme)
    if not (batched_x or batched_y or batched_a or batched_b):
        return fn(x, y, a, b)
    axes = tuple(0 if flag else None for flag in (batched_x, batched_y, batched_a, batched_b))
    return jax.vmap(fn, in_axes=axes)(x, y, a, b)


def _prepare(x, y, key, num_projections, p, control_variate, coefficient, weights_x,
             weights_y, scheme, directions):
    """Validate everything outside jit; return the arguments of :func:`_estimate`."""
    _check_options(num_projections, p, control_variate, coefficient, scheme)
    if directions is None:
        # first: a key passed in x's place is the likelier mistake
        _check_key(key, "sliced_wasserstein(key, x, y)")
    x = _check_points("x", x)
    y = _check_points("y", y)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"y must have the dimension of x (d = {x.shape[-1]}), got shape "
                         f"{y.shape}")
    if x.ndim == 3 and y.ndim == 3 and x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y hold different numbers of pairs: x has shape {x.shape}, "
                         f"y has shape {y.shape}")
    dtype = jnp.result_type(x.dtype, y.dtype)
    x, y = x.astype(dtype), y.astype(dtype)
    a = _check_weights("weights_x", weights_x, "x", x)
    b = _check_weights("weights_y", weights_y, "y", y)
    a = None if a is None else a.astype(dtype)
    b = None if b is None else b.astype(dtype)
    dim = x.shape[-1]
    if directions is not None:
        theta = _check_directions(directions, dim, dtype)
    else:
        theta = _directions(key, int(num_projections), dim, scheme, dtype)
    flags = dict(batched_x=x.ndim == 3, batched_y=y.ndim == 3,
                 batched_a=a is not None and a.ndim == 2, batched_b=b is not None and b.ndim == 2)
    return (x, y, a, b, theta), dict(p=float(p), control_variate=control_variate,
                                     coefficient=coefficient, scheme=scheme, **flags)


def sliced_wasserstein_estimate(key, x, y, *, num_projections: int = 100, p: float = 2,
                                control_variate: Optional[str] = None,
                                coefficient: str = "ols", weights_x=None, weights_y=None,
                                scheme: str = "mc", directions=None) -> SlicedEstimate:
    """Estimate SW_p^p(mu, nu) with its standard error [Nguyen2024, eqs. 1, 9, 11].

    mu = sum_i a_i delta_{x_i}, nu = sum_j b_j delta_{y_j}. With directions theta_l
    (l = 1..L) and W_l = W_p^p(theta_l#mu, theta_l#nu) the estimate is

        (1/L) sum_l [W_l - gamma (C(theta_l) - E C)],

    gamma = 0 without a control variate. C is the lower-bound variate
    (theta^T (m_mu - m_nu))^2 (eq. 8, mean |m_mu - m_nu|^2 / d) or the upper-bound one
    C_low + theta^T S_mu theta + theta^T S_nu theta (eq. 10, mean
    (|m_mu - m_nu|^2 + tr S_mu + tr S_nu) / d), m and S the weighted means and (1/n)
    covariances, read off the projections (no d x d matrix; cost O(L n (d + log n))).
    The same W_2-based variates serve p = 1.

    Args:
      key: a ``jax.random.key`` for the directions (None when ``directions`` is given).
      x, y: points (n, d) and (m, d), n != m allowed; or a batch of pairs (B, n, d),
        (B, m, d) (one of them may be unbatched), all evaluated with the same directions.
      num_projections: L >= 1.
      p: the order, >= 1 (p = 1 and p = 2 are the tested cases).
      control_variate: None, "lower" or "upper".
      coefficient: how gamma is fitted from the L directions: "ols" (default; least squares,
        the estimate is the regression intercept, exact when W_l is affine in C_l, bias
        O(1/L)), "reference" (the authors' code: C centred at its known mean; biased low by
        O(1/L), a few % at L <= 10), "crossfit" (gamma of each half applied to the other;
        exactly unbiased for scheme "mc"). With L < 4 the plain estimate is returned.
      weights_x, weights_y: optional non-negative weights (n,) / (m,) (or batched), normalised.
      scheme: direction scheme, see :func:`samplers.sliced.directions`.
      directions: optional (L, d) unit vectors to use instead of drawing them.

    Returns:
      A :class:`SlicedEstimate` (value = SW_p^p, stderr, variance_factor, distance = SW_p,
      plain, gamma); arrays of shape (B,) for a batch of pairs.

    Differentiable in ``x`` and ``y`` (jax.grad), jit- and vmap-compatible (over ``key``).
    """
    args, static = _prepare(x, y, key, num_projections, p, control_variate, coefficient,
                            weights_x, weights_y, scheme, directions)
    return _estimate(*args, **static)


def sliced_wasserstein(key, x, y, *, num_projections: int = 100, p: float = 2,
                       control_variate: Optional[str] = None, coefficient: str = "ols",
                       weights_x=None, weights_y=None, scheme: str = "mc",
                       directions=None) -> jax.Array:
    """SW_p(mu, nu) = (estimate of SW_p^p, clamped at 0)^(1/p) [Nguyen2024, eq. 1].

    The same value as POT's ``ot.sliced_wasserstein_distance`` given the same directions
    (POT wants them as ``projections`` of shape (d, L)). Arguments as in
    :func:`sliced_wasserstein_estimate`; a scalar, or shape (B,) for a batch of pairs.
    """
    return sliced_wasserstein_estimate(
        key, x, y, num_projections=num_projections, p=p, control_variate=control_variate,
        coefficient=coefficient, weights_x=weights_x, weights_y=weights_y, scheme=scheme,
        directions=directions).distance

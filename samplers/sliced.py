"""Sliced Wasserstein distances with control variates, and sliced Wasserstein flows.

Implements Nguyen & Ho, "Sliced Wasserstein Estimation with Control Variates", ICLR 2024
(arXiv 2305.00402). For measures mu, nu on R^d and p >= 1,

    SW_p^p(mu, nu) = E_{theta ~ U(S^{d-1})} W_p^p(theta#mu, theta#nu)          (paper, eq. 1)

estimated from L directions theta_l by

* plain Monte Carlo: (1/L) sum_l W_l, W_l = W_p^p(theta_l#mu, theta_l#nu);
* control variates (paper, section 3): with the Gaussian fits of the projections,
  C_low(theta) = (theta^T (m_mu - m_nu))^2 (the lower bound, paper eq. 8) and
  C_up(theta) = C_low + theta^T S_mu theta + theta^T S_nu theta (the upper bound, eq. 10),
  whose means over theta are |m_mu - m_nu|^2 / d and (|m_mu - m_nu|^2 + tr S_mu + tr S_nu) / d
  (Propositions 1-2, from E[theta theta^T] = I / d); the estimate is
  (1/L) sum_l [W_l - gamma (C_l - E C)] (eqs. 9 and 11).

Everything a control variate needs is read off the projections already computed (the mean and
variance of theta^T x), so no d x d matrix is ever formed: the cost is O(L n (d + log n)).

1-d Wasserstein distances come from quantile functions: sorting for equal sizes and uniform
weights, the merged cumulative-weight grid otherwise (unequal sizes, weights).

Public functions: :func:`sliced_wasserstein` (SW_p, a scalar or one per pair),
:func:`sliced_wasserstein_estimate` (SW_p^p with its standard error and the measured variance
reduction), :func:`sliced_wasserstein_flow` (an :class:`~samplers.base.Algorithm` for
:func:`samplers.run`), :func:`sliced_wasserstein_to_reference` (a diagnostic comparing any
sampler's draws with reference draws), :func:`directions` and :func:`wasserstein_1d`.
"""
from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from .base import Algorithm
from .validation import check_key, check_positive

__all__ = [
    "SlicedEstimate", "SWFlowState", "SWFlowInfo", "directions", "wasserstein_1d",
    "sliced_wasserstein", "sliced_wasserstein_estimate", "sliced_wasserstein_flow",
    "sliced_wasserstein_to_reference", "demo_case",
]

CONTROL_VARIATES = (None, "lower", "upper")
COEFFICIENTS = ("ols", "reference", "crossfit")
SCHEMES = ("mc", "orthogonal", "qmc")
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


# ------------------------------------------------------------------------- validation

def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_points(name: str, x) -> jax.Array:
    """(n, d) or a batch (B, n, d) of points with n >= 1, d >= 1, real floating dtype."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array of points of shape (n, d), got {x!r}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (n, d) or (batch, n, d), got shape {x.shape}")
    if x.shape[-2] < 1:
        raise ValueError(f"{name} must hold at least one point (an empty set has no "
                         f"distance), got shape {x.shape}")
    if x.shape[-1] < 1:
        raise ValueError(f"{name} must have dimension d >= 1, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if _is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} must be finite, got NaN or infinite entries")
    return x


def _check_weights(name: str, w, points_name: str, points: jax.Array):
    """None, or non-negative weights of shape (n,) or (B, n) with a positive sum."""
    if w is None:
        return None
    w = jnp.asarray(w)
    expected = points.shape[:-1]
    if w.shape not in (expected, expected[-1:]):
        raise ValueError(f"{name} must have shape {expected[-1:]} (one weight per row of "
                         f"{points_name}), got shape {w.shape}")
    if not jnp.issubdtype(w.dtype, jnp.floating):
        w = w.astype(points.dtype)
    if _is_concrete(w):
        arr = np.asarray(w)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name} must be finite and >= 0, got min {np.nanmin(arr)!r}")
        if np.any(arr.sum(-1) <= 0):
            raise ValueError(f"{name} must have a positive sum, got {arr.sum(-1)!r}")
    return w


def _check_options(num_projections, p, control_variate, coefficient, scheme) -> None:
    if not isinstance(num_projections, (int, np.integer)) or isinstance(num_projections, bool) \
            or num_projections < 1:
        raise ValueError(f"num_projections must be an integer >= 1, got {num_projections!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"p must be a number >= 1, got {p!r}")
    if not (math.isfinite(float(p)) and p >= 1):
        raise ValueError(f"p must be a finite number >= 1, got {p!r}")
    if control_variate not in CONTROL_VARIATES:
        raise ValueError(f"control_variate must be one of {CONTROL_VARIATES}, got "
                         f"{control_variate!r}")
    if coefficient not in COEFFICIENTS:
        raise ValueError(f"coefficient must be one of {COEFFICIENTS}, got {coefficient!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def _check_key(key) -> jax.Array:
    if key is None:
        raise TypeError("key must be a jax.random.key (directions are random), got None; "
                        "or pass directions=")
    check_key("key", key, "sliced_wasserstein(key, x, y)")
    return key


def _check_directions(theta, dim: int, dtype) -> jax.Array:
    theta = jnp.asarray(theta, dtype)
    if theta.ndim != 2 or theta.shape[1] != dim or theta.shape[0] < 1:
        raise ValueError(f"directions must have shape (L, {dim}) with L >= 1, got shape "
                         f"{theta.shape}")
    return theta


# ------------------------------------------------------------------------- directions

def _first_primes(k: int) -> np.ndarray:
    """The first ``k`` primes (bases of the Halton sequence)."""
    limit = max(16, int(k * (math.log(k + 1) + math.log(math.log(k + 2)) + 3)))
    sieve = np.ones(limit, bool)
    sieve[:2] = False
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = False
    return np.flatnonzero(sieve)[:k]


def _halton(num: int, dim: int, dtype) -> jax.Array:
    """The first ``num`` points (from index 1) of the ``dim``-dimensional Halton sequence."""
    bases = jnp.asarray(_first_primes(dim), jnp.int32)
    digits = max(1, math.ceil(math.log2(num + 1)))  # enough for base 2, more than enough else
    index = jnp.arange(1, num + 1, dtype=jnp.int32)[:, None]

    def body(_, carry):
        rest, scale, total = carry
        total = total + (rest % bases).astype(dtype) * scale
        return rest // bases, scale / bases.astype(dtype), total

    init = (jnp.broadcast_to(index, (num, dim)), jnp.ones((dim,), dtype) / bases.astype(dtype),
            jnp.zeros((num, dim), dtype))
    return jax.lax.fori_loop(0, digits, body, init)[2]


def _random_orthogonal_blocks(key, num: int, dim: int, dtype) -> jax.Array:
    """``ceil(num/dim)`` independent Haar-random orthonormal bases, stacked, first ``num`` rows."""
    blocks = -(-num // dim)
    z = jax.random.normal(key, (blocks, dim, dim), dtype)
    q, r = jnp.linalg.qr(z)
    # QR with a positive diagonal of R makes Q Haar-distributed (Mezzadri 2007).
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    return jnp.swapaxes(q, -1, -2).reshape(blocks * dim, dim)[:num]


def _directions(key, num: int, dim: int, scheme: str, dtype) -> jax.Array:
    if scheme == "orthogonal":
        return _random_orthogonal_blocks(key, num, dim, dtype)
    if scheme == "qmc":
        shift = jax.random.uniform(key, (dim,), dtype)
        u = jnp.mod(_halton(num, dim, dtype) + shift, 1.0)  # Cranley-Patterson rotation
        tiny = jnp.finfo(dtype).eps
        z = ndtri(jnp.clip(u, tiny, 1.0 - tiny))
    else:
        z = jax.random.normal(key, (num, dim), dtype)
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True)


def directions(key, num_projections: int, dim: int, scheme: str = "mc",
               dtype=None) -> jax.Array:
    """``num_projections`` unit vectors in R^dim, each marginally uniform on the sphere.

    Args:
      key: a ``jax.random.key``.
      num_projections: L >= 1.
      dim: d >= 1.
      scheme: "mc" (i.i.d. theta = z/|z|, z ~ N(0, I)); "orthogonal" (stacked independent
        Haar-random orthonormal bases: the directions of one block are orthogonal, so a full
        block has sum theta theta^T = I exactly; O(L d^2) for the QR factorisations);
        "qmc" (randomised quasi-Monte Carlo: a Halton sequence shifted modulo 1 by one uniform
        vector, mapped through the normal quantile and normalised). Every scheme keeps each
        direction uniform on the sphere, so every estimator stays unbiased in the same sense
        and the control variates' means E C = ... / d stay exact.
      dtype: floating dtype (default: JAX's default float).

    Returns:
      (L, d) array of unit vectors.
    """
    _check_options(num_projections, 2, None, "ols", scheme)
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    return _directions(_check_key(key), int(num_projections), int(dim), scheme, dtype)


# --------------------------------------------------------------------------- 1-d W_p

def _host_sort(v):
    return np.sort(np.asarray(v), axis=-1)


def _host_argsort(v):
    return np.argsort(np.asarray(v), axis=-1).astype(np.int32)


def _callback(fn, a, dtype):
    return jax.pure_callback(fn, jax.ShapeDtypeStruct(a.shape, dtype), a,
                             vmap_method="broadcast_all")


def _use_host(a) -> bool:
    """Host sorting only for float32: a callback's operands are rebuilt on a callback thread
    under the *global* x64 flag, so float64 inside ``jax.enable_x64(True)`` would arrive
    truncated to float32 (measured with jax 0.10.2); float64 keeps XLA's sort."""
    return a.dtype == jnp.float32


def _argsort_last(a):
    """Row-wise argsort (int32, no gradient): numpy's on CPU, XLA's elsewhere."""
    a = jax.lax.stop_gradient(a)
    if not _use_host(a):
        return jnp.argsort(a, axis=-1).astype(jnp.int32)
    return jax.lax.platform_dependent(
        a, cpu=lambda v: _callback(_host_argsort, v, jnp.int32),
        default=lambda v: jnp.argsort(v, axis=-1).astype(jnp.int32))


@jax.custom_jvp
def _sort_last(a):
    """Row-wise sort along the last axis, differentiable (the tangent is permuted like a).

    On CPU the values come from numpy through a host callback: XLA:CPU's comparator sort is
    10-20x slower than numpy's vectorised one (measured: (50, 1000) float32 rows, 16 ms vs
    0.9 ms with the callback; jax-ml/jax#10434). On GPU/TPU, and for float64, it is
    ``jnp.sort``.
    """
    if not _use_host(a):
        return jnp.sort(a, axis=-1)
    return jax.lax.platform_dependent(
        a, cpu=lambda v: _callback(_host_sort, v, v.dtype),
        default=lambda v: jnp.sort(v, axis=-1))


@_sort_last.defjvp
def _sort_last_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    perm = _argsort_last(a)
    return jnp.take_along_axis(a, perm, axis=-1), jnp.take_along_axis(da, perm, axis=-1)


def _uniform_1d(u, v, p):
    """W_p^p between uniform empirical measures of equal size: mean |u_(i) - v_(i)|^p."""
    return jnp.mean(jnp.abs(_sort_last(u) - _sort_last(v)) ** p)


def _quantile_1d(u, v, a, b, p):
    """W_p^p = int_0^1 |F^{-1}(t) - G^{-1}(t)|^p dt between weighted empirical measures.

    Both quantile functions are step functions; on the merged grid of the cumulative weights
    each piece has constant integrand. F^{-1}(t) = u_(i) for t in (A_{i-1}, A_i], so on the
    piece ending at t_k the value is u_(i) with i the first index where A_i >= t_k.
    """
    iu, iv = _argsort_last(u), _argsort_last(v)
    us, vs = u[iu], v[iv]
    ca = jnp.cumsum(a[iu] / jnp.sum(a))
    cb = jnp.cumsum(b[iv] / jnp.sum(b))
    grid = _sort_last(jax.lax.stop_gradient(jnp.concatenate([ca, cb])))
    widths = jnp.diff(grid, prepend=0.0)
    i = jnp.minimum(jnp.searchsorted(ca, grid, side="left"), u.shape[0] - 1)
    j = jnp.minimum(jnp.searchsorted(cb, grid, side="left"), v.shape[0] - 1)
    return jnp.sum(widths * jnp.abs(us[i] - vs[j]) ** p)


def wasserstein_1d(u, v, weights_u=None, weights_v=None, p: float = 2.0) -> jax.Array:
    """W_p^p between two 1-d empirical measures (the p-th power, not W_p).

    Args:
      u, v: (n,) and (m,) support points.
      weights_u, weights_v: optional non-negative weights (normalised here); None = uniform.
      p: the order, >= 1.

    Sorting when n = m and both are uniform; the quantile functions on the merged grid of
    cumulative weights otherwise (Nguyen & Ho 2024, eq. 2). O((n + m) log(n + m)).
    """
    u, v = jnp.asarray(u), jnp.asarray(v)
    for name, arr in (("u", u), ("v", v)):
        if arr.ndim != 1 or arr.shape[0] < 1:
            raise ValueError(f"{name} must have shape (n,) with n >= 1, got shape {arr.shape}")
    _check_options(1, p, None, "ols", "mc")
    weights_u = _check_weights("weights_u", weights_u, "u", u[:, None])
    weights_v = _check_weights("weights_v", weights_v, "v", v[:, None])
    if weights_u is None and weights_v is None and u.shape == v.shape:
        return _uniform_1d(u, v, p)
    a = jnp.ones_like(u) if weights_u is None else weights_u.astype(u.dtype)
    b = jnp.ones_like(v) if weights_v is None else weights_v.astype(v.dtype)
    return _quantile_1d(u, v, a, b, p)


# -------------------------------------------------------------------------- estimator

def _projected_w(px, py, a, b, p):
    """(L,) W_p^p between the rows of the projections px (L, n), py (L, m)."""
    if a is None and b is None and px.shape[1] == py.shape[1]:
        return jnp.mean(jnp.abs(_sort_last(px) - _sort_last(py)) ** p, axis=1)
    a = jnp.ones(px.shape[1], px.dtype) if a is None else a
    b = jnp.ones(py.shape[1], py.dtype) if b is None else b
    return jax.vmap(_quantile_1d, in_axes=(0, 0, None, None, None))(px, py, a, b, p)


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
      authors' code (Nguyen & Ho 2024, eq. 9 with the plug-in moments).
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
             weights_y, scheme, directions_):
    """Validate everything outside jit; return the arguments of :func:`_estimate`."""
    _check_options(num_projections, p, control_variate, coefficient, scheme)
    if directions_ is None:
        _check_key(key)  # first: a key passed in x's place is the likelier mistake
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
    if directions_ is not None:
        theta = _check_directions(directions_, dim, dtype)
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
    """Estimate SW_p^p(mu, nu) with its standard error (Nguyen & Ho 2024, eqs. 1, 9, 11).

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
      scheme: direction scheme, see :func:`directions`.
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
    """SW_p(mu, nu) = (estimate of SW_p^p, clamped at 0)^(1/p) (Nguyen & Ho 2024, eq. 1).

    The same value as POT's ``ot.sliced_wasserstein_distance`` given the same directions
    (POT wants them as ``projections`` of shape (d, L)). Arguments as in
    :func:`sliced_wasserstein_estimate`; a scalar, or shape (B,) for a batch of pairs.
    """
    return sliced_wasserstein_estimate(
        key, x, y, num_projections=num_projections, p=p, control_variate=control_variate,
        coefficient=coefficient, weights_x=weights_x, weights_y=weights_y, scheme=scheme,
        directions=directions).distance


# ------------------------------------------------------------------------------- flow

class SWFlowState(NamedTuple):
    """State of a sliced Wasserstein flow: the particles (n, d)."""

    position: jax.Array


class SWFlowInfo(NamedTuple):
    """Per-step statistics: the SW_p^p estimate at the particles before the step, its
    standard error and the measured variance reduction of the control variate."""

    sw: jax.Array
    stderr: jax.Array
    variance_factor: jax.Array


def sliced_wasserstein_flow(target_points, step_size: float, *, num_projections: int = 100,
                            p: float = 2, control_variate: Optional[str] = None,
                            coefficient: str = "ols", target_weights=None,
                            scheme: str = "mc", objective: str = "power",
                            stop_gradient_coefficient: bool = False) -> Algorithm:
    """A sliced Wasserstein flow towards a target cloud, as an :class:`Algorithm`.

    Each step draws L fresh directions and moves the n particles x down the gradient of the
    estimated SW (Nguyen & Ho 2024, section 4, "gradient flows"):

        x <- x - step_size * n * grad_x F(x),

    F = the SW_p^p estimate (``objective="power"``; for p = 2 the particle velocity is then
    -2 E_theta[theta (theta^T x_i - T_theta(theta^T x_i))], T_theta the 1-d optimal map) or
    SW_p itself (``objective="distance"``: the authors' loss N * SW_2 with plain SGD). With a
    control variate the gradient of the CV estimate is used: same cost, lower variance.

    Args:
      target_points: (m, d) target cloud.
      step_size: > 0.
      num_projections, p, control_variate, coefficient, scheme: as in
        :func:`sliced_wasserstein_estimate`.
      target_weights: optional (m,) non-negative weights of the target.
      objective: "power" or "distance".
      stop_gradient_coefficient: True treats gamma as a constant in the gradient (the
        authors' code differentiates through it: False).

    Returns:
      ``Algorithm(init, step, name="sw_flow")``; ``init(position (n, d), key=None)``,
      ``step(key, state, batch=None) -> (SWFlowState, SWFlowInfo)``. Use with
      ``samplers.run(key, flow, source_points, num_steps)``.
    """
    target = _check_points("target_points", target_points)
    if target.ndim != 2:
        raise ValueError(f"target_points must have shape (m, d), got shape {target.shape}")
    b = _check_weights("target_weights", target_weights, "target_points", target)
    check_positive("step_size", step_size)
    _check_options(num_projections, p, control_variate, coefficient, scheme)
    if objective not in ("power", "distance"):
        raise ValueError(f"objective must be 'power' or 'distance', got {objective!r}")
    num, pf, dim = int(num_projections), float(p), target.shape[1]

    def loss(x, theta):
        tgt = target.astype(x.dtype)
        bb = None if b is None else b.astype(x.dtype)
        est = _estimate_pair(x, tgt, None, bb, theta, pf, control_variate, coefficient, scheme)
        if stop_gradient_coefficient and control_variate is not None \
                and num >= MIN_CV_PROJECTIONS:
            # gamma frozen: differentiate (1/L) sum_l W_l - gamma (C_l - E C) with gamma fixed
            w, c_dev = _terms(x, tgt, None, bb, theta, pf, control_variate)
            gamma = jax.lax.stop_gradient(est.gamma)
            est = _summarise(w, w - gamma * c_dev, gamma, 1, pf, scheme, dim)
        value = est.value if objective == "power" else _root(est.value, pf)
        return value, est

    def init(position, key=None):
        position = jnp.asarray(position)
        if position.ndim != 2 or position.shape[1] != dim:
            raise ValueError(f"position must have shape (n, {dim}) (the target's dimension), "
                             f"got shape {position.shape}")
        if not jnp.issubdtype(position.dtype, jnp.floating):
            position = position.astype(jnp.result_type(float))
        return SWFlowState(position)

    def step(key, state, batch=None):
        x = state.position
        theta = _directions(key, num, dim, scheme, x.dtype)
        grad, est = jax.grad(loss, has_aux=True)(x, theta)
        x = x - step_size * x.shape[0] * grad
        return SWFlowState(x), SWFlowInfo(est.value, est.stderr, est.variance_factor)

    return Algorithm(init=init, step=step, name="sw_flow")


# ------------------------------------------------------------------------- diagnostic

def _flatten_draws(name: str, draws, leading: int) -> np.ndarray:
    """A pytree of draws with ``leading`` sample axes -> (N, D), leaves in tree order."""
    positions = getattr(draws, "positions", draws)  # a samplers.Trace
    leaves = jax.tree.leaves(positions)
    if not leaves:
        raise ValueError(f"{name} holds no arrays")
    shapes = {np.shape(leaf)[:leading] for leaf in leaves}
    if len(shapes) != 1 or any(np.ndim(leaf) < leading for leaf in leaves):
        raise ValueError(f"{name}: every leaf needs the same {leading} leading sample axes, got "
                         f"shapes {[np.shape(leaf) for leaf in leaves]}")
    size = int(np.prod(shapes.pop()))
    return np.concatenate([np.reshape(np.asarray(leaf), (size, -1)) for leaf in leaves], axis=1)


def sliced_wasserstein_to_reference(key, draws, reference, *, num_projections: int = 200,
                                    p: float = 2, control_variate: Optional[str] = "upper",
                                    coefficient: str = "ols", scheme: str = "mc",
                                    chain_axes: Optional[int] = None) -> SlicedEstimate:
    """Compare any sampler's output with reference draws by sliced Wasserstein.

    Args:
      key: a ``jax.random.key`` for the directions.
      draws: a :class:`samplers.Trace` (positions with (chain, draw) axes), or an array /
        pytree of draws with leading sample axes: (N, ...) or (chain, draw, ...).
      reference: exact draws from the target, an array / pytree with one leading axis (M, ...)
        and the same structure as one draw.
      num_projections, p, control_variate, coefficient, scheme: as in
        :func:`sliced_wasserstein_estimate` (default: the upper control variate, which always
        reduces the variance -- Nguyen & Ho 2024, section 3.2).
      chain_axes: how many leading axes of ``draws`` index samples (default: 2 for a Trace,
        else 1).

    Returns:
      A :class:`SlicedEstimate` of SW_p^p between the two empirical measures (pooled over
      chains; pytrees flattened leaf by leaf). The flattened coordinates are not rescaled:
      standardise them first if they live on very different scales.
    """
    if chain_axes is None:
        chain_axes = 2 if hasattr(draws, "positions") else 1
    if chain_axes not in (1, 2):
        raise ValueError(f"chain_axes must be 1 or 2, got {chain_axes!r}")
    x = _flatten_draws("draws", draws, chain_axes)
    y = _flatten_draws("reference", reference, 1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference draws have {y.shape[1]} coordinates, draws have "
                         f"{x.shape[1]}: they must describe the same parameters")
    return sliced_wasserstein_estimate(key, x, y, num_projections=num_projections, p=p,
                                       control_variate=control_variate,
                                       coefficient=coefficient, scheme=scheme)


# ------------------------------------------------------------------------------- demo

def demo_case(seed: int = 0, num_points: int = 500, num_steps: int = 500) -> dict:
    """One ``samplers demo`` row: an SW flow (upper control variate) from N(0, I_2) particles
    to a target cloud, scored by the exact W_2 between the final particles and the target
    (an optimal assignment, :func:`samplers.diagnostics.empirical_w2`; 0 is the exact answer).

    Returns a dict with "method", "target", "w2_error", "min_ess" (None: particles, not a
    chain), "seconds", "plot" (None) and, for the demo's plot, "draws" (the final particles,
    (num_points, 2)) and "exact_draws" (the target cloud, (num_points, 2)).
    """
    from .diagnostics import empirical_w2
    from .run import run

    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, num_points)
    radius = 2.0 + 0.2 * rng.standard_normal(num_points)
    target = np.stack([radius * np.cos(angle) + 1.0, radius * np.sin(angle) - 1.0], 1)
    source = rng.standard_normal((num_points, 2))
    flow = sliced_wasserstein_flow(jnp.asarray(target, jnp.float32), step_size=0.2,
                                   num_projections=50, control_variate="upper")
    start = time.perf_counter()
    trace = run(jax.random.key(seed), flow, jnp.asarray(source, jnp.float32), num_steps,
                thin=num_steps, progress=False)
    final = np.asarray(trace.positions[0, -1])
    seconds = time.perf_counter() - start
    return {"method": "sw flow (upper CV)", "target": "ring cloud (n=500, d=2)",
            "w2_error": float(empirical_w2(final, target)), "min_ess": None,
            "seconds": seconds, "plot": None, "draws": final, "exact_draws": target,
            "draws_label": f"particles after {num_steps} steps", "exact_label": "target cloud"}

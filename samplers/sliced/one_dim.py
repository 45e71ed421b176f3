"""One-dimensional Wasserstein distances W_p^p, the building block of every slice.

In one dimension W_p^p(mu, nu) = int_0^1 |F^{-1}(t) - G^{-1}(t)|^p dt [Nguyen2024,
eq. 2], F^{-1}, G^{-1} the quantile functions: for equal sizes and uniform weights the mean
of |u_(i) - v_(i)|^p over the sorted points, otherwise a sum over the merged grid of
cumulative weights. The sort is differentiable (the tangent is permuted like the values) and,
for float32 on CPU, runs in numpy through a host callback.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import _check_p, _check_weights

__all__ = ["wasserstein_1d"]


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
    truncated to float32; float64 keeps XLA's sort."""
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
    """W_p^p between uniform empirical measures of equal size, row by row: the mean of
    |u_(i) - v_(i)|^p over the last axis of u, v (..., n) -> (...)."""
    return jnp.mean(jnp.abs(_sort_last(u) - _sort_last(v)) ** p, axis=-1)


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


def _projected_w(px, py, a, b, p):
    """(L,) W_p^p between the rows of the projections px (L, n), py (L, m); weights a (n,),
    b (m,) or None (uniform)."""
    if a is None and b is None and px.shape[1] == py.shape[1]:
        return _uniform_1d(px, py, p)
    a = jnp.ones(px.shape[1], px.dtype) if a is None else a
    b = jnp.ones(py.shape[1], py.dtype) if b is None else b
    return jax.vmap(_quantile_1d, in_axes=(0, 0, None, None, None))(px, py, a, b, p)


def wasserstein_1d(u, v, weights_u=None, weights_v=None, p: float = 2.0) -> jax.Array:
    """W_p^p between two 1-d empirical measures (the p-th power, not W_p).

    Args:
      u, v: (n,) and (m,) support points.
      weights_u, weights_v: optional non-negative weights (normalised here); None = uniform.
      p: the order, >= 1.

    Returns:
      a scalar, W_p^p.

    Sorting when n = m and both are uniform; the quantile functions on the merged grid of
    cumulative weights otherwise [Nguyen2024, eq. 2]. O((n + m) log(n + m)).
    """
    u, v = jnp.asarray(u), jnp.asarray(v)
    for name, arr in (("u", u), ("v", v)):
        if arr.ndim != 1 or arr.shape[0] < 1:
            raise ValueError(f"{name} must have shape (n,) with n >= 1, got shape {arr.shape}")
    _check_p(p)
    weights_u = _check_weights("weights_u", weights_u, "u", u[:, None])
    weights_v = _check_weights("weights_v", weights_v, "v", v[:, None])
    if weights_u is None and weights_v is None and u.shape == v.shape:
        return _uniform_1d(u, v, p)
    a = jnp.ones_like(u) if weights_u is None else weights_u.astype(u.dtype)
    b = jnp.ones_like(v) if weights_v is None else weights_v.astype(v.dtype)
    return _quantile_1d(u, v, a, b, p)

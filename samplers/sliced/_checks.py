"""Argument checks of :mod:`samplers.sliced`, run where arguments enter (outside jit).

Each check names the argument, the value it got and what it needs (ValueError for a wrong
value or shape, TypeError for a wrong type).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..validation import check_choice, check_int, check_key, is_concrete

CONTROL_VARIATES = ("lower", "upper")  # or None
COEFFICIENTS = ("ols", "reference", "crossfit")
SCHEMES = ("mc", "orthogonal", "qmc")


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
    if is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
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
    if is_concrete(w):
        arr = np.asarray(w)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name} must be finite and >= 0, got min {np.nanmin(arr)!r}")
        if np.any(arr.sum(-1) <= 0):
            raise ValueError(f"{name} must have a positive sum, got {arr.sum(-1)!r}")
    return w


def _check_p(p) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"p must be a number >= 1, got {p!r}")
    if not (math.isfinite(float(p)) and p >= 1):
        raise ValueError(f"p must be a finite number >= 1, got {p!r}")


def _check_options(num_projections, p, control_variate, coefficient, scheme) -> None:
    """The options shared by the estimators and the flow."""
    check_int("num_projections", num_projections)
    _check_p(p)
    if control_variate is not None:
        check_choice("control_variate", control_variate, CONTROL_VARIATES)
    check_choice("coefficient", coefficient, COEFFICIENTS)
    check_choice("scheme", scheme, SCHEMES)


def _check_key(key, call: str) -> jax.Array:
    """``key`` checked as the first argument of ``call`` (a signature, for the message)."""
    if key is None:
        raise TypeError("key must be a jax.random.key (directions are random), got None; "
                        "or pass directions=")
    check_key("key", key, call)
    return key


def _check_directions(theta, dim: int, dtype) -> jax.Array:
    theta = jnp.asarray(theta, dtype)
    if theta.ndim != 2 or theta.shape[1] != dim or theta.shape[0] < 1:
        raise ValueError(f"directions must have shape (L, {dim}) with L >= 1, got shape "
                         f"{theta.shape}")
    return theta

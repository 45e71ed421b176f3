"""Projection directions theta_1..theta_L on the unit sphere S^{d-1}.

The sliced Wasserstein distance averages over theta ~ U(S^{d-1}) [Nguyen2024, eq. 1];
three schemes draw the L directions, each keeping every direction marginally uniform so that
the estimators stay unbiased and the control variates' means E C = ... / d stay exact:
i.i.d. Monte Carlo, stacked Haar-random orthonormal bases, and randomised quasi-Monte Carlo
(a Halton sequence with a Cranley-Patterson shift).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from ..validation import check_choice, check_int
from ._checks import SCHEMES, _check_key

__all__ = ["directions"]


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
    # QR with a positive diagonal of R makes Q Haar-distributed [Mezzadri2007].
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    return jnp.swapaxes(q, -1, -2).reshape(blocks * dim, dim)[:num]


def _directions(key, num: int, dim: int, scheme: str, dtype) -> jax.Array:
    """(num, dim) unit vectors by ``scheme``; arguments already checked (traceable in key)."""
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
    check_int("num_projections", num_projections)
    check_choice("scheme", scheme, SCHEMES)
    check_int("dim", dim)
    dtype = jnp.result_type(float) if dtype is None else dtype
    key = _check_key(key, "directions(key, num_projections, dim)")
    return _directions(key, int(num_projections), int(dim), scheme, dtype)

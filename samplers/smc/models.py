"""State-space models: the interface every SMC routine uses, and two ready-made models.

A model is any object with the six members below (duck typing); the algorithms never ask
for more. States are 1-d arrays ``x`` of shape ``(d,)``; observations are the rows of
``ys`` (leading axis = time, ``t = 0..T-1``).

* ``init_sample(key) -> x``, ``init_logpdf(x)``: the law of ``x_0``;
* ``transition_sample(key, x) -> x'``, ``transition_logpdf(x, x')``: ``q(x, x')``;
* ``observation_logpdf(x, y)``: ``log g(x, y)``;
* ``log_transition_bound``: ``sup log q(x, x')`` (a number) when the transition density is
  bounded, else ``None``. With a bound, PaRIS draws backward indices by accept-reject in
  O(N) expected time per step [Olsson2017, Sec. 3.2]; without, exactly in O(N^2).

:class:`StateSpaceModel` wraps user functions; :class:`LinearGaussian` and
:class:`StochasticVolatility` are NamedTuples of arrays, so they are pytrees: a jitted
function can take them as arguments, and ``jax.grad`` can differentiate through their
parameters (Fisher's identity in :func:`samplers.smc.fit`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..base import Array
from ..validation import check_int, check_key


_LOG_2PI = math.log(2.0 * math.pi)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class StateSpaceModel:
    """A state-space model from user functions (see the module docstring for signatures).

    The functions are part of the model's identity (it is a static pytree): build the
    model once and reuse it, so jitted routines compile once.
    """

    init_sample: Callable[[Array], Array]
    init_logpdf: Callable[[Array], Array]
    transition_sample: Callable[[Array, Array], Array]
    transition_logpdf: Callable[[Array, Array], Array]
    observation_logpdf: Callable[[Array, Array], Array]
    log_transition_bound: Optional[float] = None


def _matvec(M, v):
    """M @ v for a small matrix, as a sum of products (fuses with elementwise neighbours)."""
    return jnp.sum(M * v, axis=-1)


def _mvn_logpdf(x, mean, chol):
    """log N(x; mean, L L^T) for a lower-triangular Cholesky factor ``chol``."""
    # L^{-1} as a matrix (unbatched under vmap over x), applied by elementwise products:
    # batches of tiny triangular solves or dots are slow on CPU and fuse badly (60x at N = 1000).
    inv_chol = jax.scipy.linalg.solve_triangular(chol, jnp.eye(chol.shape[0], dtype=chol.dtype),
                                                 lower=True)
    z = _matvec(inv_chol, x - mean)
    logdet = jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * (jnp.dot(z, z) + x.shape[-1] * _LOG_2PI) - logdet


class LinearGaussian(NamedTuple):
    """x_0 ~ N(m0, P0), x_{t+1} = A x_t + N(0, Q), y_t = C x_t + N(0, R).

    Scalars and vectors are promoted (a scalar ``A`` is a 1 x 1 matrix). The exact filter
    and smoother are :func:`samplers.smc.kalman_filter` and :func:`samplers.smc.rts_smoother`.
    """

    A: Array
    Q: Array
    C: Array
    R: Array
    m0: Array
    P0: Array

    def matrices(self):
        """(A, Q, C, R, m0, P0) as 2-d matrices and a 1-d mean."""
        mat = jnp.atleast_2d
        return (mat(self.A), mat(self.Q), mat(self.C), mat(self.R),
                jnp.atleast_1d(self.m0), mat(self.P0))

    def init_sample(self, key):
        _, _, _, _, m0, P0 = self.matrices()
        return m0 + jnp.linalg.cholesky(P0) @ jax.random.normal(key, m0.shape, m0.dtype)

    def init_logpdf(self, x):
        _, _, _, _, m0, P0 = self.matrices()
        return _mvn_logpdf(x, m0, jnp.linalg.cholesky(P0))

    def transition_sample(self, key, x):
        A, Q = self.matrices()[:2]
        return A @ x + jnp.linalg.cholesky(Q) @ jax.random.normal(key, x.shape, x.dtype)

    def transition_logpdf(self, x, x_next):
        A, Q = self.matrices()[:2]
        return _mvn_logpdf(x_next, _matvec(A, x), jnp.linalg.cholesky(Q))

    def observation_logpdf(self, x, y):
        _, _, C, R, _, _ = self.matrices()
        return _mvn_logpdf(jnp.reshape(y, (-1,)), _matvec(C, x), jnp.linalg.cholesky(R))

    def observation_sample(self, key, x):
        _, _, C, R, _, _ = self.matrices()
        return C @ x + jnp.linalg.cholesky(R) @ jax.random.normal(key, (C.shape[0],), x.dtype)

    @property
    def log_transition_bound(self):
        Q = self.matrices()[1]
        return -0.5 * Q.shape[0] * _LOG_2PI - jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(Q))))


class StochasticVolatility(NamedTuple):
    """x_0 ~ N(mu, sigma^2 / (1 - rho^2)), x_{t+1} = mu + rho (x_t - mu) + sigma u,
    y_t ~ N(0, exp(x_t)) ([Pitt1999]; states are shape-(1,) arrays).

    The default parameters are the ones the ``particles`` library ships for this model.
    """

    mu: Array = -1.02
    rho: Array = 0.9702
    sigma: Array = 0.178

    def init_sample(self, key):
        sd = self.sigma / jnp.sqrt(1.0 - self.rho ** 2)
        return self.mu + sd * jax.random.normal(key, (1,))

    def init_logpdf(self, x):
        var = self.sigma ** 2 / (1.0 - self.rho ** 2)
        return jnp.sum(-0.5 * ((x - self.mu) ** 2 / var + jnp.log(var) + _LOG_2PI))

    def _mean(self, x):
        return self.mu + self.rho * (x - self.mu)

    def transition_sample(self, key, x):
        return self._mean(x) + self.sigma * jax.random.normal(key, x.shape, x.dtype)

    def transition_logpdf(self, x, x_next):
        z = (x_next - self._mean(x)) / self.sigma
        return jnp.sum(-0.5 * (z ** 2 + _LOG_2PI) - jnp.log(self.sigma))

    def observation_logpdf(self, x, y):
        return jnp.sum(-0.5 * (jnp.reshape(y, (-1,)) ** 2 * jnp.exp(-x) + x + _LOG_2PI))

    def observation_sample(self, key, x):
        return jnp.exp(0.5 * x) * jax.random.normal(key, x.shape, x.dtype)

    @property
    def log_transition_bound(self):
        return -0.5 * _LOG_2PI - jnp.log(self.sigma)


def simulate(key: Array, model, num_steps: int):
    """Draw ``(xs, ys)`` of length ``num_steps`` from the model.

    Needs an ``observation_sample(key, x)`` method (the ready-made models have one).
    """
    check_key("key", key, "simulate(key, model, num_steps)")
    num_steps = check_int("num_steps", num_steps)
    k0, key = jax.random.split(key)

    def body(x, k):
        k_obs, k_next = jax.random.split(k)
        return model.transition_sample(k_next, x), (x, model.observation_sample(k_obs, x))

    _, (xs, ys) = jax.lax.scan(body, model.init_sample(k0), jax.random.split(key, num_steps))
    return xs, ys


# ------------------------------------------------------------------------- validation

def check_inputs(model, ys, num_particles: int, name: str = "num_particles") -> Array:
    """Validate ``ys`` and the particle count against ``model``; return ``ys`` as an array.

    Raises TypeError for a particle count that is not an integer, and ValueError naming the
    argument for fewer than 2 particles, NaN observations, observation rows the model cannot
    read, a transition that changes the state's shape.
    """
    check_int(name, num_particles, minimum=2)
    ys = jnp.asarray(ys)
    if ys.ndim == 0 or ys.shape[0] < 1:
        raise ValueError(f"ys must have a leading time axis with at least one row, got shape {ys.shape}")
    bad = np.flatnonzero(~np.isfinite(np.asarray(ys)).reshape(ys.shape[0], -1).all(axis=1))
    if bad.size:
        raise ValueError(f"ys must be finite; rows {bad[:10].tolist()} have NaN or inf entries")
    if isinstance(model, LinearGaussian):
        A, Q, C, R, m0, P0 = (np.shape(m) for m in model.matrices())
        d, dy = A[0], C[0]
        shapes_ok = A == (d, d) and Q == (d, d) and C == (dy, d) and R == (dy, dy) \
            and m0 == (d,) and P0 == (d, d)
        if not shapes_ok:
            raise ValueError(f"LinearGaussian shapes do not agree: A {A}, Q {Q}, C {C}, R {R}, "
                             f"m0 {m0}, P0 {P0}; expected A, Q, P0 (d, d), C (dy, d), R (dy, dy), m0 (d,)")
        if int(np.prod(ys.shape[1:])) != dy:
            raise ValueError(f"ys rows have shape {ys.shape[1:]} but C has {dy} rows (dy = {dy})")
    key = jax.random.key(0)
    try:
        x = jax.eval_shape(model.init_sample, key)
        x_next = jax.eval_shape(model.transition_sample, key, x)
        log_g = jax.eval_shape(model.observation_logpdf, x, ys[0])
        log_q = jax.eval_shape(model.transition_logpdf, x, x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the model cannot evaluate its densities on states from init_sample "
                         f"and rows of ys (shape {ys.shape[1:]}): {err}") from err
    if x.ndim != 1 or x_next.shape != x.shape:
        raise ValueError(f"init_sample must return a 1-d state and transition_sample the same "
                         f"shape; got {x.shape} and {x_next.shape}")
    if log_g.shape != () or log_q.shape != ():
        raise ValueError(f"observation_logpdf and transition_logpdf must return scalars, got "
                         f"shapes {log_g.shape} and {log_q.shape}")
    return ys

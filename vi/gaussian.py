"""The Gaussian family N(m, Sigma) that Gaussian VI optimises over.

A :class:`Gaussian` stores its mean ``m`` (d,) and a square-root factor ``scale`` (d, d)
with ``Sigma = scale @ scale.T``. The covariance is therefore symmetric positive
semi-definite by construction, and positive definite whenever ``scale`` is nonsingular;
the algorithms in :mod:`vi.fbgvi` keep it so (FB-GVI stores the symmetric square root
with eigenvalues >= sqrt(step_size), see :func:`vi.fbgvi.jko_entropy_step`; the
reparameterised baseline stores a Cholesky factor with a softplus diagonal). Any factor
works: a Cholesky factor, the symmetric square root, or ``U diag(sqrt(s))``.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from samplers.validation import check_int, check_traced, is_concrete

__all__ = ["Gaussian", "check_gaussian", "psd_sqrt"]

_LOG_2PI = math.log(2.0 * math.pi)


@jax.jit
def psd_sqrt(cov):
    """Symmetric PSD square root of a symmetric matrix (eigh; negative rounding clipped)."""
    cov = 0.5 * (cov + cov.T)
    s, u = jnp.linalg.eigh(cov)
    return (u * jnp.sqrt(jnp.clip(s, 0.0))) @ u.T


class Gaussian(NamedTuple):
    """N(mean, scale @ scale.T) over R^d; a pytree (jit/vmap/scan friendly).

    Attributes:
      mean: (d,) mean.
      scale: (d, d) square-root factor of the covariance (any factor, see module docstring).
    """

    mean: jax.Array
    scale: jax.Array

    # --------------------------------------------------------------- constructors
    @classmethod
    def standard(cls, d: int, dtype=None) -> "Gaussian":
        """N(0, I_d) (float32 unless ``dtype`` or JAX's x64 mode says otherwise)."""
        d = check_int("d", d)
        dtype = dtype or jnp.zeros(()).dtype
        return cls(jnp.zeros(d, dtype), jnp.eye(d, dtype=dtype))

    @classmethod
    def from_cov(cls, mean, cov) -> "Gaussian":
        """N(mean, cov) with ``scale`` the symmetric square root of ``cov``.

        Raises ValueError naming ``mean`` or ``cov`` when shapes disagree, entries are not
        finite or ``cov`` is not symmetric positive definite.
        """
        m = np.asarray(mean, dtype=np.float64)
        c = np.asarray(cov, dtype=np.float64)
        if m.ndim != 1:
            raise ValueError(f"mean must be a vector of shape (d,), got shape {m.shape}")
        d = m.size
        if c.shape != (d, d):
            raise ValueError(f"cov must have shape ({d}, {d}) to match mean, got {c.shape}")
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(c))):
            raise ValueError("mean and cov must be finite, got non-finite entries")
        if not np.allclose(c, c.T, rtol=1e-6, atol=1e-12 * max(1.0, np.abs(c).max())):
            raise ValueError(f"cov must be symmetric, got max |cov - cov.T| = "
                             f"{np.abs(c - c.T).max():.3g}")
        low = np.linalg.eigvalsh(0.5 * (c + c.T)).min()
        if not low > 0:
            raise ValueError(f"cov must be symmetric positive definite, got smallest "
                             f"eigenvalue {low:.6g}")
        dtype = jnp.result_type(jnp.asarray(mean).dtype, jnp.asarray(cov).dtype, jnp.zeros(()).dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.zeros(()).dtype
        return cls(jnp.asarray(mean, dtype), psd_sqrt(jnp.asarray(cov, dtype)))

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    @property
    def cov(self) -> jax.Array:
        """Sigma = scale @ scale.T, symmetrised against rounding."""
        c = self.scale @ jnp.swapaxes(self.scale, -1, -2)
        return 0.5 * (c + jnp.swapaxes(c, -1, -2))

    # ---------------------------------------------------------------------- methods
    def sample(self, key, n: int) -> jax.Array:
        """``n`` i.i.d. draws, shape (n, d): m + scale @ u with u ~ N(0, I)."""
        return _sample(key, self.mean, self.scale, int(n))

    def logpdf(self, x) -> jax.Array:
        """log N(x; m, Sigma) for x of shape (..., d), returned with shape (...)."""
        return _logpdf(self.mean, self.scale, jnp.asarray(x, self.mean.dtype))

    def entropy(self) -> jax.Array:
        """Differential entropy 1/2 log det(2 pi e Sigma)."""
        return _entropy(self.scale)

    def kl_to(self, mean, cov) -> np.ndarray:
        """Exact KL(q || N(mean, cov)) for every Gaussian q in ``self``, in float64 numpy.

        ``self`` may carry leading axes, e.g. a run's ``trace.positions`` (chain, draw): the
        result has those axes (NaN for a non-finite q, inf for a singular one). ``mean``
        (d,), ``cov`` (d, d) symmetric positive definite.
        """
        return self._per_gaussian(_kl_np, mean, cov)

    def w2_squared_to(self, mean, cov) -> np.ndarray:
        """Exact W2^2(q, N(mean, cov)) (the Bures-Wasserstein formula [Dowson1982])
        for every Gaussian q in ``self``, in float64 numpy; leading axes as in :meth:`kl_to`."""
        return self._per_gaussian(_w2sq_np, mean, cov)

    def _per_gaussian(self, fn, mean, cov) -> np.ndarray:
        ms, ss = np.asarray(self.mean, np.float64), np.asarray(self.scale, np.float64)
        cs = ss @ np.swapaxes(ss, -1, -2)  # in numpy: float64 whatever JAX's x64 mode
        cs = 0.5 * (cs + np.swapaxes(cs, -1, -2))
        lead = ms.shape[:-1]
        d = ms.shape[-1]
        values = [fn(m, c, mean, cov) for m, c in zip(ms.reshape(-1, d), cs.reshape(-1, d, d))]
        return np.asarray(values, np.float64).reshape(lead)

    def to_arviz(self, key, num_draws: int = 1000, num_chains: int = 1,
                 unravel_fn: Optional[Callable] = None, constrain_fn: Optional[Callable] = None,
                 name: str = "x"):
        """ArviZ data with a ``posterior`` group of i.i.d. draws from this Gaussian.

        Args:
          key: JAX key for the draws.
          num_draws, num_chains: the (chain, draw) shape of the posterior group.
          unravel_fn: maps a flat (d,) vector back to the model's pytree (the third output of
            ``jax.flatten_util.ravel_pytree``, or of :func:`vi.ravel_logdensity`).
          constrain_fn: maps an (unravelled) unconstrained position to constrained sites
            (``samplers.numpyro.logdensity``'s third output); applied after ``unravel_fn``.
          name: variable name for a bare array position.

        Raises a ValueError (nothing is exported) when the mean or scale is not finite, e.g.
        the result of a run that diverged with ``on_nonfinite="flag"``, or when a draw maps
        to a non-finite value (naming the variable).
        """
        from samplers.trace import from_dict, named_leaves

        if is_concrete(self.mean) and is_concrete(self.scale):
            if not (np.all(np.isfinite(np.asarray(self.mean)))
                    and np.all(np.isfinite(np.asarray(self.scale)))):
                raise ValueError(
                    "cannot export a non-finite Gaussian to ArviZ: its mean or scale holds NaN "
                    "or inf (the VI run diverged; see trace.nonfinite_step). Lower the step "
                    "size, or build the algorithm with step_size=None")
        x = self.sample(key, int(num_draws) * int(num_chains))
        tree = x
        if unravel_fn is not None:
            tree = jax.vmap(unravel_fn)(x)
        if constrain_fn is not None:
            tree = jax.vmap(constrain_fn)(tree)
        tree = jax.tree.map(lambda a: a.reshape((num_chains, num_draws) + a.shape[1:]), tree)
        posterior = named_leaves(tree, name)
        for var, draws in posterior.items():
            values = np.asarray(draws)
            if np.issubdtype(values.dtype, np.inexact) and not np.all(np.isfinite(values)):
                raise ValueError(f"cannot export to ArviZ: variable {var!r} has NaN or inf "
                                 "draws (check constrain_fn, or the scale of the Gaussian)")
        return from_dict({"posterior": posterior})


@functools.partial(jax.jit, static_argnums=3)
def _sample(key, mean, scale, n):
    u = jax.random.normal(key, (n, mean.shape[-1]), mean.dtype)
    return mean + u @ scale.T


@jax.jit
def _logpdf(mean, scale, x):
    d = mean.shape[-1]
    cov = scale @ scale.T
    chol = jnp.linalg.cholesky(0.5 * (cov + cov.T))
    diff = x - mean
    flat = diff.reshape(-1, d)
    z = solve_triangular(chol, flat.T, lower=True)
    maha = jnp.sum(z**2, axis=0).reshape(diff.shape[:-1])
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return -0.5 * (maha + logdet + d * _LOG_2PI)


@jax.jit
def _entropy(scale):
    logdet = jnp.linalg.slogdet(scale)[1] * 2.0
    return 0.5 * (logdet + scale.shape[-1] * (1.0 + _LOG_2PI))


def _kl_np(m0, S0, m1, S1) -> float:
    m0, S0, m1, S1 = (np.asarray(a, np.float64) for a in (m0, S0, m1, S1))
    if not (np.all(np.isfinite(m0)) and np.all(np.isfinite(S0))):
        return float("nan")
    sign, logdet0 = np.linalg.slogdet(S0)
    if sign <= 0:
        return float("inf")
    logdet1 = np.linalg.slogdet(S1)[1]
    diff = m1 - m0
    return 0.5 * (logdet1 - logdet0 - m0.size + np.trace(np.linalg.solve(S1, S0))
                  + diff @ np.linalg.solve(S1, diff))


def _w2sq_np(m0, S0, m1, S1) -> float:
    m0, S0, m1, S1 = (np.asarray(a, np.float64) for a in (m0, S0, m1, S1))
    if not (np.all(np.isfinite(m0)) and np.all(np.isfinite(S0))):
        return float("nan")
    s, u = np.linalg.eigh(S1)
    root = (u * np.sqrt(np.clip(s, 0, None))) @ u.T
    inner = root @ S0 @ root
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (inner + inner.T)), 0, None)))
    return float(np.sum((m0 - m1) ** 2) + np.trace(S0) + np.trace(S1) - 2.0 * cross)


def check_gaussian(name: str, q, dim: Optional[int] = None) -> None:
    """Raise TypeError/ValueError unless ``q`` is a finite, nondegenerate Gaussian.

    Checks: a :class:`Gaussian`; ``mean`` of shape (d,) (``d == dim`` when given); ``scale``
    of shape (d, d); and, when the entries are concrete, finite entries and
    ``scale @ scale.T`` symmetric positive definite (the smallest singular value of
    ``scale`` above d * eps(dtype) times the largest). Under ``jit`` and ``vmap`` (inside
    ``samplers.run``, per chain) the values are checked on the host when the program reaches
    the check (:func:`samplers.validation.check_traced`).
    """
    if not isinstance(q, Gaussian):
        raise TypeError(f"{name} must be a vi.Gaussian (e.g. vi.Gaussian.standard(d) or "
                        f"vi.Gaussian.from_cov(mean, cov)), got {type(q).__name__}")
    for part in ("mean", "scale"):
        if not hasattr(getattr(q, part), "shape"):
            raise TypeError(f"{name}.{part} must be an array, got "
                            f"{type(getattr(q, part)).__name__} (for a pytree position, "
                            "flatten the log-density with vi.ravel_logdensity)")
    mean_shape, scale_shape = jnp.shape(q.mean), jnp.shape(q.scale)
    if len(mean_shape) != 1:
        raise ValueError(f"{name}.mean must have shape (d,), got {mean_shape}")
    d = mean_shape[0]
    if dim is not None and d != dim:
        raise ValueError(f"{name} has dimension {d}, but the target has dimension {dim}")
    if scale_shape != (d, d):
        raise ValueError(f"{name}.scale must have shape ({d}, {d}), got {scale_shape}")
    check_traced(functools.partial(_check_values, name), q.mean, q.scale)


def _check_values(name: str, mean, scale) -> None:
    """The value part of :func:`check_gaussian`, on the host."""
    m, s = np.asarray(mean), np.asarray(scale)
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s))):
        raise ValueError(f"{name} must be finite, got non-finite entries in mean or scale")
    sv = np.linalg.svd(s.astype(np.float64), compute_uv=False)
    eps = np.finfo(s.dtype).eps if np.issubdtype(s.dtype, np.floating) else np.finfo(float).eps
    if not sv.min() > m.shape[0] * eps * sv.max():
        raise ValueError(f"{name}'s covariance must be symmetric positive definite, got "
                         f"smallest eigenvalue {sv.min() ** 2:.3g} (largest {sv.max() ** 2:.3g})")

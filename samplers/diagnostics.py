"""Sample-quality diagnostics: discrepancies between samples and targets or other samples.

* :func:`ksd` -- kernel Stein discrepancy of a sample against a score function;
* :func:`mmd`, :func:`energy_distance` -- two-sample discrepancies;
* :func:`gaussian_w2`, :func:`gaussian_kl` -- closed-form distances between Gaussians;
* :func:`empirical_w2` -- exact 2-Wasserstein distance between two equal-size samples;
* :func:`ess`, :func:`rhat` -- effective sample size and R-hat through ArviZ;
* :func:`sliced_wasserstein_to_reference` -- any sampler's draws against reference draws by
  sliced Wasserstein, with a standard error (:mod:`samplers.sliced`'s control-variate
  estimator).

The discrepancies (``ksd``, ``mmd``, ``energy_distance``) return *squared* quantities
(the natural unbiased / V-statistic estimators; a U-statistic can be negative); the
Wasserstein functions return W2 itself. Everything except ``empirical_w2``, ``ess``,
``rhat`` and ``sliced_wasserstein_to_reference`` is jit-friendly; hyper-parameters (``c``,
``beta``, ``statistic``, ``block_size``, a Python-float ``bandwidth``) are static, validated
when called.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.spatial.distance
from jax.scipy.linalg import solve_triangular

from .sliced import SlicedEstimate, sliced_wasserstein_estimate
from .validation import check_choice, check_int, check_positive

__all__ = [
    "ksd", "mmd", "energy_distance", "gaussian_w2", "gaussian_kl", "empirical_w2", "ess", "rhat",
    "sliced_wasserstein_to_reference",
]

# ------------------------------------------------------------------------- validation

def _check_samples(name: str, x, min_size: int = 1) -> None:
    """Shape checks only (static, so usable under jit): ``x`` is (n, d) with n >= min_size."""
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {x.shape}")
    if x.shape[0] < min_size:
        raise ValueError(f"{name} must have at least {min_size} rows, got shape {x.shape}")


def _check_two_samples(x, y, min_size: int = 1) -> None:
    _check_samples("x", x, min_size)
    _check_samples("y", y, min_size)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y must have the dimension of x ({x.shape[1]}), got shape {y.shape}")


def _gaussian(mean_name: str, mean, cov_name: str, cov) -> tuple[jax.Array, jax.Array]:
    mean, cov = jnp.asarray(mean), jnp.asarray(cov)
    if mean.ndim != 1:
        raise ValueError(f"{mean_name} must have shape (d,), got shape {mean.shape}")
    if cov.shape != (mean.size, mean.size):
        raise ValueError(
            f"{cov_name} must have shape {(mean.size, mean.size)}, got shape {cov.shape}"
        )
    return mean, cov


def _same_dim(name: str, mean, reference) -> None:
    if mean.shape != reference.shape:
        raise ValueError(f"{name} must have shape {reference.shape}, got shape {mean.shape}")


# ------------------------------------------------------------------------ Stein discrepancy

def _imq_stein_kernel(x, sx, y, sy, c, beta):
    """Langevin-Stein kernel k0(x, y_j) of the IMQ base kernel k = (c^2 + |x - y|^2)^beta.

    ``x``, ``sx``: (d,); ``y``, ``sy``: (m, d); returns (m,). With u = x - y, q = c^2 + |u|^2:
    k0 = sx.sy q^b + 2b q^(b-1) (sy - sx).u - 2bd q^(b-1) - 4b(b-1) q^(b-2) |u|^2, the closed
    form of div_x div_y k + grad_x k . sy + grad_y k . sx + k sx.sy.
    """
    u = x - y
    r2 = jnp.sum(u * u, axis=-1)
    q = c**2 + r2
    d = x.shape[-1]
    return (
        (sy @ sx) * q**beta
        + 2.0 * beta * q ** (beta - 1.0) * jnp.sum((sy - sx) * u, axis=-1)
        - 2.0 * beta * d * q ** (beta - 1.0)
        - 4.0 * beta * (beta - 1.0) * q ** (beta - 2.0) * r2
    )


def ksd(samples, score_fn: Callable[[jax.Array], jax.Array], c: float = 1.0,
        beta: float = -0.5, *, statistic: str = "v", block_size: int = 256) -> jax.Array:
    """Squared kernel Stein discrepancy with the inverse multiquadric kernel.

    KSD^2 = mean_{i,j} k0(x_i, x_j) (``statistic="v"``, [Gorham2017]) or mean_{i != j} k0(x_i, x_j)
    (``statistic="u"``, unbiased for the population KSD^2 of i.i.d. draws, possibly < 0),
    where k0 is the Langevin-Stein kernel built from k(x, y) = (c^2 + |x - y|^2)^beta and
    the target's score s = grad log p. [Gorham2017] show the IMQ KSD with beta in (-1, 0)
    detects non-convergence for distantly dissipative targets.

    For i.i.d. draws from p, E[KSD^2_V] = E_p k0(x, x) / n with
    k0(x, x) = c^(2 beta) |s(x)|^2 - 2 beta d c^(2 beta - 2).

    Args:
      samples: (n, d) points.
      score_fn: ``x (d,) -> grad log p(x) (d,)``, applied with vmap.
      c, beta: kernel parameters, c > 0 and -1 < beta < 0 (static).
      statistic: "v" (V-statistic, >= 0) or "u" (U-statistic; needs n >= 2).
      block_size: rows per block; memory is O(n * block_size * d) (static).

    Returns the scalar squared discrepancy (take its square root for the KSD).
    """
    check_choice("statistic", statistic, ("v", "u"))
    x = jnp.asarray(samples)
    _check_samples("samples", x, min_size=2 if statistic == "u" else 1)
    n, d = x.shape
    check_positive("c", c)
    if not -1.0 < beta < 0.0:
        raise ValueError(f"beta must lie in (-1, 0), got {beta!r}")
    block_size = check_int("block_size", block_size)
    out = jax.eval_shape(score_fn, jax.ShapeDtypeStruct((d,), x.dtype))
    if getattr(out, "shape", None) != (d,):
        raise ValueError(f"score_fn must map a (d,) = ({d},) position to a ({d},) score, got {out}")

    scores = jax.vmap(score_fn)(x)

    def row_sum(point_and_score):
        xi, si = point_and_score
        return jnp.sum(_imq_stein_kernel(xi, si, x, scores, c, beta))

    total = jnp.sum(jax.lax.map(row_sum, (x, scores), batch_size=min(block_size, n)))
    if statistic == "v":
        return total / n**2
    diagonal = c ** (2 * beta) * jnp.sum(scores**2) - 2.0 * beta * d * c ** (2 * beta - 2) * n
    return (total - diagonal) / (n * (n - 1))


# --------------------------------------------------------------------- two-sample tests

def _pairwise_distances(x, y):
    """Euclidean distances |x_i - y_j|, shape (n, m), from differences (exactly 0 on ties)."""
    return jnp.sqrt(jnp.sum(jnp.square(x[:, None, :] - y[None, :, :]), axis=-1))


def _off_diagonal_mean(k):
    n = k.shape[0]
    return (jnp.sum(k) - jnp.trace(k)) / (n * (n - 1))


def mmd(x, y, bandwidth: Optional[float] = None) -> jax.Array:
    """Unbiased squared maximum mean discrepancy with a Gaussian RBF kernel.

    MMD_u^2 = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)
    with k(a, b) = exp(-|a - b|^2 / (2 h^2)) [Gretton2012, Lemma 6].
    Unbiased (hence possibly negative) for a fixed h.

    Args:
      x: (n, d), y: (m, d) samples, n, m >= 2.
      bandwidth: h > 0; None uses the median heuristic, h = median of the pairwise
        distances within the pooled sample (which makes the estimate slightly biased).

    Memory is O((n + m)^2 d).
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_two_samples(x, y, min_size=2)
    if bandwidth is not None:
        check_positive("bandwidth", bandwidth)
    pooled = jnp.concatenate([x, y])
    distances = _pairwise_distances(pooled, pooled)
    if bandwidth is None:
        upper = jnp.triu_indices(distances.shape[0], k=1)
        bandwidth = jnp.median(distances[upper])
    kernel = jnp.exp(-0.5 * jnp.square(distances / bandwidth))
    n = x.shape[0]
    return (
        _off_diagonal_mean(kernel[:n, :n]) + _off_diagonal_mean(kernel[n:, n:])
        - 2.0 * jnp.mean(kernel[:n, n:])
    )


def energy_distance(x, y) -> jax.Array:
    """Squared energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'|, V-statistic.

    As in [Szekely2013], with expectations replaced by averages over all pairs
    (so the estimate is >= 0 and is the population value of the two empirical measures).
    ``scipy.stats.energy_distance`` returns the square root of this quantity for d = 1.
    Its gradient is NaN where two points coincide (the distance is not differentiable at 0).

    Args:
      x: (n, d), y: (m, d) samples. Memory is O((n + m)^2 d).
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_two_samples(x, y)
    return (
        2.0 * jnp.mean(_pairwise_distances(x, y))
        - jnp.mean(_pairwise_distances(x, x)) - jnp.mean(_pairwise_distances(y, y))
    )


# --------------------------------------------------------------- Gaussian distances

def _psd_sqrt(cov):
    """Symmetric square root of a symmetric PSD matrix via eigh (negative rounding clipped)."""
    eigvals, eigvecs = jnp.linalg.eigh(cov)
    return (eigvecs * jnp.sqrt(jnp.clip(eigvals, 0.0))) @ eigvecs.T


def gaussian_w2(m1, S1, m2, S2) -> jax.Array:
    """2-Wasserstein distance between N(m1, S1) and N(m2, S2) (not squared).

    W2^2 = |m1 - m2|^2 + tr(S1) + tr(S2) - 2 tr((S2^{1/2} S1 S2^{1/2})^{1/2}) [Dowson1982;
    Givens1984]. The trace of the inner root is the sum of the
    square roots of the eigenvalues of S2^{1/2} S1 S2^{1/2}. Shapes: m (d,), S (d, d)
    symmetric PSD. The squared distance is a difference of traces, so its absolute
    rounding error is about eps * (tr S1 + tr S2) and W2 near 0 is accurate only to
    about sqrt(eps * (tr S1 + tr S2)); use float64 to resolve small distances.
    """
    m1, S1 = _gaussian("m1", m1, "S1", S1)
    m2, S2 = _gaussian("m2", m2, "S2", S2)
    _same_dim("m2", m2, m1)
    root = _psd_sqrt(S2)
    inner = root @ S1 @ root
    cross = jnp.sum(jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh(0.5 * (inner + inner.T)), 0.0)))
    squared = jnp.sum(jnp.square(m1 - m2)) + jnp.trace(S1) + jnp.trace(S2) - 2.0 * cross
    return jnp.sqrt(jnp.clip(squared, 0.0))


def gaussian_kl(m0, S0, m1, S1) -> jax.Array:
    """KL(N(m0, S0) || N(m1, S1)).

    1/2 [log det S1 - log det S0 - d + tr(S1^{-1} S0) + (m1 - m0)^T S1^{-1} (m1 - m0)],
    evaluated with the Cholesky factors L0, L1: tr(S1^{-1} S0) = |L1^{-1} L0|_F^2.
    Shapes: m (d,), S (d, d) symmetric positive definite.
    """
    m0, S0 = _gaussian("m0", m0, "S0", S0)
    m1, S1 = _gaussian("m1", m1, "S1", S1)
    _same_dim("m1", m1, m0)
    L0, L1 = jnp.linalg.cholesky(S0), jnp.linalg.cholesky(S1)
    logdet_ratio = 2.0 * jnp.sum(jnp.log(jnp.diag(L1)) - jnp.log(jnp.diag(L0)))
    trace = jnp.sum(jnp.square(solve_triangular(L1, L0, lower=True)))
    mahalanobis = jnp.sum(jnp.square(solve_triangular(L1, m1 - m0, lower=True)))
    return 0.5 * (logdet_ratio - m0.size + trace + mahalanobis)


def empirical_w2(x, y) -> float:
    """Exact 2-Wasserstein distance between the empirical measures of x and y (not squared).

    With equal sizes an optimal coupling is a permutation (Birkhoff-von Neumann), found
    with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``, O(n^3)).
    numpy, not jit-able.

    Args:
      x, y: (n, d) samples of the same size n; 1-d arrays are read as (n, 1).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x, y = (z[:, None] if z.ndim == 1 else z for z in (x, y))
    _check_two_samples(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y must have as many rows as x ({x.shape[0]}), got shape {y.shape}")
    cost = scipy.spatial.distance.cdist(x, y, "sqeuclidean")
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return math.sqrt(cost[rows, cols].mean())


# --------------------------------------------------------------------- ArviZ diagnostics

def _arviz_diagnostic(name: str, x) -> np.ndarray:
    """Apply ``az.<name>`` to an array (chain, draw, ...) and return a numpy array.

    ArviZ 0.x: ``from_dict(posterior=...)`` gives InferenceData and the diagnostic a Dataset.
    ArviZ 1.x: ``from_dict({"posterior": ...})`` gives a DataTree and the diagnostic the
    posterior node as a DataTree. Both results are indexed by the variable name. ArviZ is
    imported here, not at module import, to keep ``import samplers`` light.
    """
    arr = np.asarray(x)
    if arr.ndim < 2:
        raise ValueError(f"x must have shape (chain, draw, ...), got shape {arr.shape}")
    import arviz as az

    if int(az.__version__.split(".")[0]) >= 1:
        data = az.from_dict({"posterior": {"x": arr}})
    else:
        data = az.from_dict(posterior={"x": arr})
    return np.asarray(getattr(az, name)(data)["x"].values)


def ess(x) -> np.ndarray:
    """Bulk effective sample size (rank-normalised, [Vehtari2021]) via ArviZ.

    Args:
      x: array (chain, draw, ...). Returns an array of shape ``x.shape[2:]``.
    """
    return _arviz_diagnostic("ess", x)


def rhat(x) -> np.ndarray:
    """Rank-normalised split R-hat [Vehtari2021] via ArviZ.

    Args:
      x: array (chain, draw, ...). Returns an array of shape ``x.shape[2:]``.
    """
    return _arviz_diagnostic("rhat", x)


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
        :func:`samplers.sliced.sliced_wasserstein_estimate` (default: the upper control
        variate, which always reduces the variance [Nguyen2024, Sec. 3.2]).
      chain_axes: how many leading axes of ``draws`` index samples (default: 2 for a Trace,
        else 1).

    Returns:
      A :class:`samplers.sliced.SlicedEstimate` of SW_p^p [Nguyen2024, eq. 1] between
      the two empirical measures (pooled over chains; pytrees flattened leaf by leaf). The
      flattened coordinates are not rescaled: standardise them first if they live on very
      different scales.
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

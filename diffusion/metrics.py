"""Judging samples of real images: distances in a classifier's feature space, precision and
recall, and bits per dimension.

Moment-like distances on pixels cannot tell a Gaussian fitted to the 8x8 digits from a
diffusion model's samples (sliced Wasserstein 0.072 against 0.071); distances in the features
of a classifier trained on the data can. The usual recipe:

* :func:`digits_classifier` trains a small MLP classifier (seconds on a CPU) and returns its
  penultimate-layer ``features``;
* :func:`frechet_distance` (FID's formula, [Heusel2017]), :func:`kernel_distance`
  (KID, [Binkowski2018]) and :func:`precision_recall` [Kynkaanniemi2019]
  compare the features of real and generated images;
* :func:`bits_per_dim` turns :func:`diffusion.log_likelihood` into the bits per dimension of
  discrete images (uniform dequantisation, [Theis2016]).

The distances run in float64 (``jax.enable_x64``, or numpy on the host): each is a
difference of large, nearly equal sums (the Frechet distance's traces, KID's kernel means),
whose float32 rounding is comparable to the small distances between two real sets; they run
once per evaluation on matrices of a few thousand rows, so the cost of float64 does not
matter. They return Python floats and are not meant for ``jit``.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.spatial.distance

from samplers.base import as_float
from samplers.validation import check_finite_rows, check_int, check_key
from samplers.diagnostics import _off_diagonal_mean, gaussian_w2

from .likelihood import log_likelihood
from .solvers import _check_num_steps

__all__ = ["frechet_distance", "kernel_distance", "KernelDistance", "precision_recall",
           "PrecisionRecall", "bits_per_dim", "digits_classifier", "Classifier"]

# exact trace of the PF-ODE Jacobian up to this dimension, Hutchinson's estimator above
EXACT_TRACE_MAX_DIM = 64
# compiled once (eager, its dozen operations would each compile on a first call)
_gaussian_w2 = jax.jit(gaussian_w2)
# rows of a distance matrix block in precision_recall (memory: block x n float64)
_BLOCK_ENTRIES = 4_000_000


# ------------------------------------------------------------------------------ validation

def _features(name, x, min_rows, like=None) -> np.ndarray:
    """A finite real (n, d) array with n >= min_rows (and the dimension of ``like``, a
    (name, array) pair), as float64 numpy."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array of features of shape (n, d), got {x!r}")
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            or arr.dtype == bool):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows, got shape {arr.shape}")
    if like is not None and arr.shape[1] != like[1].shape[1]:
        raise ValueError(f"{name} must have the dimension of {like[0]} ({like[1].shape[1]}), "
                         f"got shape {arr.shape}")
    check_finite_rows(name, arr)
    return arr.astype(np.float64)


# ------------------------------------------------------------------------- Frechet distance

def frechet_distance(features_a, features_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ([Heusel2017],
    the definition of FID, there with Inception features; the Frechet distance of two
    Gaussians is [Dowson1982]):

        |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^{1/2}),

    with m the sample means and C the unbiased (ddof = 1) sample covariances. This is the
    squared 2-Wasserstein distance between the two Gaussians, computed by
    :func:`samplers.diagnostics.gaussian_w2` in float64: tr (C_a C_b)^{1/2} is the sum of
    the square roots of the eigenvalues of the symmetric PSD matrix C_b^{1/2} C_a C_b^{1/2}
    (its rounding-negative eigenvalues clipped to 0), which avoids the non-symmetric matrix
    square root and its complex round-off.

    Args:
      features_a: (n_a, d), features_b: (n_b, d) features (n >= 2 each).
    Returns the distance (>= 0) as a float. From samples it is biased upwards, by a term of
    order 1 / n [Chong2020]: compare figures at equal
    sample sizes.
    """
    a = _features("features_a", features_a, 2)
    b = _features("features_b", features_b, 2, like=("features_a", a))
    moments = [(x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))) for x in (a, b)]
    with jax.enable_x64(True):
        w2 = float(_gaussian_w2(*moments[0], *moments[1]))
    return w2 * w2


# -------------------------------------------------------------------------- kernel distance

class KernelDistance(NamedTuple):
    """The KID estimate and its standard error (see :func:`kernel_distance`)."""

    value: float
    stderr: float


def _cubic_kernel(x, y):
    """k(x, y) = (x . y / d + 1)^3, KID's kernel [Binkowski2018]."""
    return (x @ y.T / x.shape[-1] + 1.0) ** 3


@jax.jit
def _mmd2_and_stderr(x, y):
    """Unbiased MMD^2 [Gretton2012, Lemma 6] with the cubic kernel, and its
    first-order (Hoeffding) standard error sqrt(4 Var h_x / n + 4 Var h_y / m), where
    h_x(x_i) = mean_{j != i} k(x_i, x_j) - mean_l k(x_i, y_l) (and h_y likewise)."""
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y)
    value = _off_diagonal_mean(kxx) + _off_diagonal_mean(kyy) - 2.0 * jnp.mean(kxy)
    h_x = (jnp.sum(kxx, 1) - jnp.diag(kxx)) / (n - 1) - jnp.mean(kxy, 1)
    h_y = (jnp.sum(kyy, 1) - jnp.diag(kyy)) / (m - 1) - jnp.mean(kxy, 0)
    stderr = jnp.sqrt(4.0 * jnp.var(h_x, ddof=1) / n + 4.0 * jnp.var(h_y, ddof=1) / m)
    return value, stderr


def _subsets(key, num_points, num_subsets, subset_size):
    """(num_subsets, subset_size) row indices: disjoint blocks of one permutation when they
    fit, otherwise independent draws without replacement within each subset."""
    if num_subsets * subset_size <= num_points:
        perm = jax.random.permutation(key, num_points)
        return perm[:num_subsets * subset_size].reshape(num_subsets, subset_size)
    keys = jax.random.split(key, num_subsets)
    return jax.vmap(lambda k: jax.random.choice(k, num_points, (subset_size,), replace=False)
                    )(keys)


def kernel_distance(features_a, features_b, *, num_subsets: int = 1,
                    subset_size: Optional[int] = None, key=None) -> KernelDistance:
    """Kernel Inception Distance ([Binkowski2018], its
    definition of KID): the unbiased estimator of MMD^2 [Gretton2012, Lemma 6],

        mean_{i != j} k(a_i, a_j) + mean_{i != j} k(b_i, b_j) - 2 mean_{i, j} k(a_i, b_j),

    with the cubic polynomial kernel k(x, y) = (x . y / d + 1)^3. Unbiased, so it can be
    negative when the two laws are equal; computed in float64.

    Args:
      features_a: (n_a, d), features_b: (n_b, d) features.
      num_subsets, subset_size: with the defaults (1, None) the estimator uses every row of
        both sets, and ``stderr`` is the first-order (Hoeffding) standard error
        sqrt(4 Var h_a / n_a + 4 Var h_b / n_b) of the U-statistic (h_a(a_i) = mean_{j != i}
        k(a_i, a_j) - mean_l k(a_i, b_l)); it is a proper standard error when the laws
        differ, and about 0 (too small) when they are equal, where the spread is of order
        1 / n instead of 1 / sqrt(n). Otherwise (the subset scheme of [Binkowski2018]) the value
        is the mean of the estimates on ``num_subsets`` subsets of ``subset_size`` rows of
        each set (default ``min(n_a, n_b) // num_subsets``), and ``stderr`` is the standard
        deviation of the subset estimates over sqrt(num_subsets) (NaN for one subset). When
        the subsets fit they are disjoint blocks of a random permutation, independent, and
        ``stderr`` is the estimate's standard error;
        otherwise each subset is drawn anew (without replacement within it) and ``stderr``
        measures only the subsetting noise, given the two sets.
      key: a ``jax.random.key`` for drawing the subsets (needed with subsets).
    Returns ``KernelDistance(value, stderr)``, floats.
    """
    a = _features("features_a", features_a, 2)
    b = _features("features_b", features_b, 2, like=("features_a", a))
    num_subsets = check_int("num_subsets", num_subsets, minimum=1)
    with jax.enable_x64(True):
        if num_subsets == 1 and subset_size is None:
            value, stderr = _mmd2_and_stderr(a, b)
            return KernelDistance(float(value), float(stderr))
        if key is None:
            raise TypeError("key must be a jax.random.key to draw the subsets (num_subsets="
                            f"{num_subsets}, subset_size={subset_size!r}), got None")
        check_key("key", key, "kernel_distance(features_a, features_b, key=key)")
        smaller = min(a.shape[0], b.shape[0])
        if subset_size is None:
            subset_size = smaller // num_subsets
            if subset_size < 2:
                raise ValueError(f"num_subsets must leave subsets of >= 2 rows: {smaller} rows "
                                 f"into {num_subsets} subsets; got num_subsets={num_subsets}")
        subset_size = check_int("subset_size", subset_size, minimum=2)
        if subset_size > smaller:
            raise ValueError(f"subset_size must be at most the rows of the smaller set "
                             f"({smaller}), got subset_size={subset_size}")
        k_a, k_b = jax.random.split(key)
        idx_a = _subsets(k_a, a.shape[0], num_subsets, subset_size)
        idx_b = _subsets(k_b, b.shape[0], num_subsets, subset_size)
        a, b = jnp.asarray(a), jnp.asarray(b)
        values = jax.lax.map(lambda ij: _mmd2_and_stderr(a[ij[0]], b[ij[1]])[0],
                             (idx_a, idx_b))
        values = np.asarray(values)
    stderr = values.std(ddof=1) / math.sqrt(num_subsets) if num_subsets > 1 else math.nan
    return KernelDistance(float(values.mean()), float(stderr))


# ---------------------------------------------------------------------- precision and recall

class PrecisionRecall(NamedTuple):
    """Improved precision and recall (see :func:`precision_recall`)."""

    precision: float
    recall: float


def _blocks(num_rows, num_cols):
    step = max(1, _BLOCK_ENTRIES // max(num_cols, 1))
    return range(0, num_rows, step), step


def _knn_radii(x, k):
    """Distance from each row of x to its k-th nearest other row (itself excluded)."""
    starts, step = _blocks(x.shape[0], x.shape[0])
    radii = np.empty(x.shape[0])
    for s in starts:
        dist = scipy.spatial.distance.cdist(x[s:s + step], x)
        radii[s:s + step] = np.partition(dist, k, axis=1)[:, k]  # index 0: the point itself
    return radii


def _covered(points, centres, radii):
    """Fraction of ``points`` inside at least one ball B(centres_i, radii_i)."""
    starts, step = _blocks(points.shape[0], centres.shape[0])
    inside = 0
    for s in starts:
        dist = scipy.spatial.distance.cdist(points[s:s + step], centres)
        inside += int(np.sum(np.any(dist <= radii, axis=1)))
    return inside / points.shape[0]


def precision_recall(real_features, fake_features, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall [Kynkaanniemi2019,
    Sec. 2]. The manifold
    of a set is the union of balls around its points, each of radius the distance to the
    point's k-th nearest neighbour in the set (k = 3 in the paper). Precision is the
    fraction of fake points inside the real manifold (how many samples are realistic);
    recall the fraction of real points inside the fake manifold (how much of the data is
    covered).

    Args:
      real_features: (n_r, d), fake_features: (n_g, d); each set needs more than ``k`` rows.
      k: the neighbour defining the radii.
    Returns ``PrecisionRecall(precision, recall)``, floats in [0, 1]. Euclidean distances in
    float64 on the host (``scipy.spatial.distance.cdist``), in blocks of rows: O(n^2 d)
    time, O(n) memory beyond a block.
    """
    k = check_int("k", k, minimum=1)
    real = _features("real_features", real_features, k + 1)
    fake = _features("fake_features", fake_features, k + 1, like=("real_features", real))
    precision = _covered(fake, real, _knn_radii(real, k))
    recall = _covered(real, fake, _knn_radii(fake, k))
    return PrecisionRecall(precision, recall)


# ------------------------------------------------------------------------- bits per dimension

def bits_per_dim(key, data, sde, score, *, num_levels: int = 256, method: Optional[str] = None,
                 num_probes: int = 1, num_steps: int = 100, time_grid: str = "logsnr",
                 t_min=None, t_max=None, prior_logp=None, params=None, cond=None):
    """Bits per dimension of discrete images under a model of the dequantised, rescaled data,
    from the PF-ODE log-likelihood (:func:`diffusion.log_likelihood`).

    Images u in {0, ..., K - 1}^d (K = ``num_levels``; 256 for 8-bit pixels) are dequantised
    as v = u + U, U ~ Uniform[0, 1)^d [Theis2016],
    and mapped to the model's scale by x = v / s - 1 with
    s = (K - 1) / 2 (= 127.5: pixel values u / 127.5 - 1 lie in [-1, 1], the scale of
    DDPM and score-SDE training; dequantised x lies in [-1, 1 + 1 / s)). The discrete model
    P(u) = int_{[0,1)^d} p_v(u + w) dw satisfies, by Jensen's inequality,
    log P(u) >= E_U[log p_v(u + U)], and the change of variables x = v / s - 1 gives
    p_v(v) = p_x(x) s^{-d}. Hence

        -log2 P(u) / d <= E_U[-log p_x(x) + d ln s] / (d ln 2),

    i.e. bpd = (-log p_x(x) + d ln s) / (d ln 2) (= -log p_x(x) / (d ln 2) + log2 127.5, about
    +7.0 bits for 8-bit data), with one draw of U per image.

    Args:
      key: a ``jax.random.key`` (the dequantisation noise, and Hutchinson's probes).
      data: (n, *shape) integer pixel values in {0, ..., num_levels - 1}.
      sde, score: as in :func:`diffusion.log_likelihood`: the forward SDE and the model of
        x (the scale above), a per-point ``score(x, t)`` or a :class:`diffusion.Network`
        (with ``params`` and ``cond``).
      num_levels: K, the number of pixel values (17 for scikit-learn's digits, 0..16).
      method: "exact" (Jacobian trace) or "hutchinson" (``num_probes`` Rademacher probes);
        default "exact" up to d = 64, "hutchinson" above.
      num_steps, time_grid, t_min, t_max, prior_logp, params, cond: passed to
        :func:`diffusion.log_likelihood`.
    Returns (n,) bits per dimension, one per image (upper bounds in expectation over U, with
    the error of the log-likelihood: ODE discretisation, the prior standing in for p_{t_max},
    and Hutchinson's noise); report their mean.
    """
    check_key("key", key, "bits_per_dim(key, data, sde, score)")
    num_levels = check_int("num_levels", num_levels, minimum=2)
    _check_num_steps(num_steps)
    u = as_float(jnp.asarray(data))
    if u.ndim < 2 or u.shape[0] < 1:
        raise ValueError(f"data must have shape (n, *shape) with n >= 1, got shape {u.shape}")
    check_finite_rows("data", u)
    values = np.asarray(u)
    if np.any(values != np.round(values)) or values.min() < 0 or values.max() > num_levels - 1:
        raise ValueError(f"data must hold integer pixel values in {{0, ..., {num_levels - 1}}} "
                         f"(num_levels={num_levels}), got values in [{values.min():g}, "
                         f"{values.max():g}], integers: {bool(np.all(values == np.round(values)))}")
    dim = math.prod(u.shape[1:])
    if method is None:
        method = "exact" if dim <= EXACT_TRACE_MAX_DIM else "hutchinson"
    scale = (num_levels - 1) / 2.0
    k_dequant, k_probes = jax.random.split(key)
    x = (u + jax.random.uniform(k_dequant, u.shape, u.dtype)) / scale - 1.0
    logp = log_likelihood(x, sde, score, method=method,
                          key=k_probes if method == "hutchinson" else None,
                          num_probes=num_probes, num_steps=num_steps, time_grid=time_grid,
                          t_min=t_min, t_max=t_max, prior_logp=prior_logp, params=params,
                          cond=cond)
    return (-logp + dim * math.log(scale)) / (dim * math.log(2.0))


# --------------------------------------------------------------- a classifier for features

class Classifier(NamedTuple):
    """A trained classifier (see :func:`digits_classifier`): ``features(images)`` (n,
    hidden[-1]) penultimate-layer activations, ``logits(images)`` (n, num_classes),
    ``params`` its parameters, ``test_accuracy`` on the test set given (or None)."""

    features: Callable
    logits: Callable
    params: dict
    test_accuracy: Optional[float]


def _forward(params, x):
    """Penultimate activations and logits of the MLP for a flat batch x (n, d)."""
    h = (x - params["shift"]) / params["scale"]
    for layer in params["hidden"]:
        h = jax.nn.silu(h @ layer["w"] + layer["b"])
    return h, h @ params["out"]["w"] + params["out"]["b"]


@functools.partial(jax.jit, static_argnums=(0,))
def _apply(index, params, x):
    return _forward(params, x)[index]


@functools.partial(jax.jit, static_argnames=("steps", "batch_size"))
def _train_classifier(key, params, x, y, learning_rate, weight_decay, *, steps, batch_size):
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    def loss(p, xb, yb):
        logits = _forward(p, xb)[1]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    def step(carry, k):
        p, state = carry
        idx = jax.random.randint(k, (batch_size,), 0, x.shape[0])
        grads = jax.grad(loss)(p, x[idx], y[idx])
        updates, state = optimizer.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)),
                                  jax.random.split(key, steps))
    return params


def _images(name, images, shape=None):
    x = as_float(jnp.asarray(images))
    if x.ndim < 2 or x.shape[0] < 1 or (shape is not None and x.shape[1:] != shape):
        expected = "(n, *shape)" if shape is None else f"(n, {', '.join(map(str, shape))})"
        raise ValueError(f"{name} must have shape {expected}, got shape {x.shape}")
    check_finite_rows(name, x)
    return x.reshape(x.shape[0], -1)


def _labels(name, labels, num_points, num_classes=None):
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (num_points,):
        raise ValueError(f"{name} must be integer class labels of shape ({num_points},), got "
                         f"dtype {y.dtype} and shape {y.shape}")
    if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
        top = "K - 1" if num_classes is None else num_classes - 1
        raise ValueError(f"{name} must lie in 0 .. {top}, got values in [{y.min()}, {y.max()}]")
    return jnp.asarray(y)


def digits_classifier(key, images, labels, *, test_images=None, test_labels=None,
                      hidden: Sequence[int] = (256, 128), steps: int = 2000,
                      batch_size: int = 128, learning_rate: float = 1e-3,
                      weight_decay: float = 1e-4) -> Classifier:
    """Train a small MLP classifier (inputs standardised by the training set's mean image and
    pixel standard deviation, SiLU hidden layers ``hidden``, softmax cross-entropy, AdamW
    [Loshchilov2019] with ``learning_rate`` and ``weight_decay``, ``steps``
    minibatches of ``batch_size`` drawn with replacement, one jitted ``lax.scan``) and
    return its penultimate layer as a feature map for :func:`frechet_distance`,
    :func:`kernel_distance` and :func:`precision_recall` (a data set's own classifier in
    place of Inception, as [Heusel2017] suggest for other domains).

    Made for scikit-learn's 8x8 digits (``sklearn.datasets.load_digits``: 1797 images,
    pixel values 0-16, 10 classes), where the defaults train in a few seconds on a CPU;
    any small images with integer labels work.

    Args:
      key: a ``jax.random.key`` (initialisation and minibatches).
      images: (n, *shape) training images; labels: (n,) integers 0 .. K - 1.
      test_images, test_labels: an optional held-out set for ``test_accuracy``.
    Returns a :class:`Classifier`. Its ``features`` and ``logits`` take images of the
    training images' shape and scale (samples of a model trained on u / 8 - 1 must be
    mapped back to the pixel scale first).
    """
    check_key("key", key, "digits_classifier(key, images, labels)")
    x = _images("images", images)
    y = _labels("labels", labels, x.shape[0])
    shape = tuple(jnp.shape(images)[1:])
    hidden = tuple(check_int("hidden", h, minimum=1) for h in hidden)
    if not hidden:
        raise ValueError("hidden must be a non-empty sequence of layer widths, got ()")
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    for name, value in (("learning_rate", learning_rate), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if (test_images is None) != (test_labels is None):
        raise ValueError("test_images and test_labels go together; got only one of them")
    num_classes = int(y.max()) + 1
    sizes = (x.shape[1],) + hidden + (num_classes,)
    k_init, k_train = jax.random.split(key)
    layers = [{"w": jax.random.normal(k, (m, n), x.dtype) * math.sqrt(2.0 / m),
               "b": jnp.zeros(n, x.dtype)}
              for k, m, n in zip(jax.random.split(k_init, len(sizes) - 1), sizes[:-1],
                                 sizes[1:])]
    params = {"shift": jnp.mean(x, 0), "scale": jnp.maximum(jnp.std(x), 1e-12),
              "hidden": layers[:-1], "out": layers[-1]}
    params = _train_classifier(k_train, params, x, y, jnp.asarray(learning_rate, x.dtype),
                               jnp.asarray(weight_decay, x.dtype), steps=steps,
                               batch_size=batch_size)

    def features(images):
        return _apply(0, params, _images("images", images, shape))

    def logits(images):
        return _apply(1, params, _images("images", images, shape))

    accuracy = None
    if test_images is not None:
        x_test = _images("test_images", test_images, shape)
        y_test = _labels("test_labels", test_labels, x_test.shape[0], num_classes)
        accuracy = float(jnp.mean(jnp.argmax(_apply(1, params, x_test), -1) == y_test))
    return Classifier(features, logits, params, accuracy)

"""diffusion.metrics (issue 17, item 7): Frechet distance, KID, precision/recall, bits per
dimension and the digits feature classifier.

Expected values are computed here independently of the package: the Frechet distance's
closed form with scipy.linalg.sqrtm, the population MMD^2 of the cubic kernel from a large
sample of independent quadruples, the Gaussian bits per dimension from the dequantised
pixels' exact moments. Tolerances are 4 Monte Carlo standard errors computed in each test.
"""
from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import scipy.linalg

import diffusion
from diffusion import metrics
from mc import Z4


def random_spd(rng, d, low=0.2, high=2.0):
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return (q * rng.uniform(low, high, d)) @ q.T


def with_moments(rng, n, mean, cov):
    """n points whose sample mean is ``mean`` and sample covariance (ddof = 1) is ``cov``,
    exactly (to round-off)."""
    z = rng.normal(size=(n, mean.size))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return mean + z @ np.linalg.cholesky(cov).T


def frechet_closed_form(m1, c1, m2, c2):
    cross = scipy.linalg.sqrtm(c1 @ c2)
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(cross).real)


# ---------------------------------------------------------------------------- Frechet distance

def test_frechet_distance_of_exact_moments_equals_the_closed_form():
    rng = np.random.default_rng(0)
    d = 5
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2 plus the mean term
    a, b = rng.uniform(0.1, 2.0, d), rng.uniform(0.1, 2.0, d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    got = metrics.frechet_distance(with_moments(rng, 50, m1, np.diag(a)),
                                   with_moments(rng, 70, m2, np.diag(b)))
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    # float64 throughout: eigendecompositions of 5x5 matrices round off at ~1e-14 relative
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # a non-commuting pair
    c1, c2 = random_spd(rng, d, 0.1, 3.0), random_spd(rng, d, 0.1, 3.0)
    assert np.abs(c1 @ c2 - c2 @ c1).max() > 0.1
    got = metrics.frechet_distance(with_moments(rng, 40, m1, c1), with_moments(rng, 40, m2, c2))
    np.testing.assert_allclose(got, frechet_closed_form(m1, c1, m2, c2), rtol=1e-9)
    # identical moments: 0 (clipped at round-off, never negative)
    x = with_moments(rng, 30, m1, c1)
    assert 0.0 <= metrics.frechet_distance(x, x[::-1]) < 1e-10


def test_frechet_distance_from_samples_within_its_bootstrap_error():
    """From n samples the estimate is biased upwards (O(d / n)); the bootstrap estimates that
    bias and the standard error, and the bias-corrected estimate must meet the exact value."""
    rng = np.random.default_rng(1)
    d, n = 3, 1000
    m1, m2 = np.zeros(d), np.full(d, 0.5)
    c1, c2 = random_spd(rng, d), random_spd(rng, d)
    x = rng.multivariate_normal(m1, c1, n)
    y = rng.multivariate_normal(m2, c2, n)
    estimate = metrics.frechet_distance(x, y)
    boot = np.array([metrics.frechet_distance(x[rng.integers(0, n, n)], y[rng.integers(0, n, n)])
                     for _ in range(100)])
    corrected = 2 * estimate - boot.mean()
    exact = frechet_closed_form(m1, c1, m2, c2)
    assert abs(corrected - exact) <= Z4 * boot.std(ddof=1), (corrected, exact, boot.std())


# ----------------------------------------------------------------------------- kernel distance

def cubic_mmd2_population(rng, mean_a, cov_a, mean_b, cov_b, num=400_000):
    """E h(x, x', y, y') with h = k(x, x') + k(y, y') - k(x, y') - k(x', y) over independent
    quadruples: the population MMD^2, with its standard error."""
    d = mean_a.size
    x, x2 = (rng.multivariate_normal(mean_a, cov_a, num) for _ in range(2))
    y, y2 = (rng.multivariate_normal(mean_b, cov_b, num) for _ in range(2))

    def k(u, v):
        return (np.sum(u * v, 1) / d + 1.0) ** 3

    h = k(x, x2) + k(y, y2) - k(x, y2) - k(x2, y)
    return h.mean(), h.std() / math.sqrt(num)


def test_kernel_distance_is_unbiased_for_identical_laws():
    """Many small-sample estimates of two draws from one law average to 0; the V-statistic
    (diagonal kept), biased by O(1/n), is far off at the same resolution."""
    rng = np.random.default_rng(2)
    n, d, reps = 10, 4, 300
    values, v_stats = [], []
    for _ in range(reps):
        a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        values.append(metrics.kernel_distance(a, b).value)
        k = lambda u, v: (u @ v.T / d + 1.0) ** 3  # noqa: E731
        v_stats.append(k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())
    values, v_stats = np.array(values), np.array(v_stats)
    se = values.std(ddof=1) / math.sqrt(reps)
    assert abs(values.mean()) <= Z4 * se, (values.mean(), se)
    assert v_stats.mean() > 10 * se  # the test would see the V-statistic's bias


def test_kernel_distance_matches_the_population_mmd_with_its_standard_error():
    rng = np.random.default_rng(3)
    d, n, reps = 4, 200, 100
    mean_a, mean_b = np.zeros(d), np.full(d, 0.3)
    cov_a, cov_b = np.eye(d), random_spd(rng, d, 0.5, 1.5)
    population, pop_se = cubic_mmd2_population(rng, mean_a, cov_a, mean_b, cov_b)
    runs = [metrics.kernel_distance(rng.multivariate_normal(mean_a, cov_a, n),
                                    rng.multivariate_normal(mean_b, cov_b, n))
            for _ in range(reps)]
    values = np.array([r.value for r in runs])
    spread = values.std(ddof=1)
    assert abs(values.mean() - population) <= Z4 * math.hypot(spread / math.sqrt(reps), pop_se)
    # the returned first-order standard error is the spread of the estimates, within the
    # relative error 1 / sqrt(2 (reps - 1)) of the spread's own estimate
    ratio = np.mean([r.stderr for r in runs]) / spread
    assert abs(ratio - 1) <= Z4 / math.sqrt(2 * (reps - 1)), ratio
    # disjoint subsets: independent estimates, their mean and standard error
    a = rng.multivariate_normal(mean_a, cov_a, 2000)
    b = rng.multivariate_normal(mean_b, cov_b, 2000)
    sub = metrics.kernel_distance(a, b, num_subsets=10, key=jax.random.key(0))
    assert abs(sub.value - population) <= Z4 * math.hypot(sub.stderr, pop_se), (sub, population)
    again = metrics.kernel_distance(a, b, num_subsets=10, key=jax.random.key(0))
    assert again == sub  # same key, same subsets


def test_kernel_distance_rejects_bad_input():
    a = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"features_b must have the dimension of features_a"):
        metrics.kernel_distance(a, np.zeros((10, 2)))
    with pytest.raises(TypeError, match=r"key must be a jax.random.key to draw the subsets"):
        metrics.kernel_distance(a, a, num_subsets=2)
    with pytest.raises(ValueError, match=r"subset_size must be at most the rows"):
        metrics.kernel_distance(a, a, subset_size=11, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"num_subsets must be an integer >= 1, got 0"):
        metrics.kernel_distance(a, a, num_subsets=0)
    with pytest.raises(ValueError, match=r"features_a must have shape \(n, d\)"):
        metrics.frechet_distance(np.zeros(5), a)
    with pytest.raises(ValueError, match=r"features_a must be finite"):
        metrics.frechet_distance(np.full((3, 3), np.nan), a)


# ------------------------------------------------------------------------ precision and recall

def clusters(rng, which, per_cluster, spread=0.1):
    """Points around 10 centres on a circle of radius 10 (6.2 apart), those in ``which``."""
    angles = 2 * np.pi * np.asarray(list(which)) / 10
    centres = 10.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return np.concatenate([c + spread * rng.normal(size=(per_cluster, 2)) for c in centres])


def test_precision_recall_extremes():
    rng = np.random.default_rng(4)
    x = clusters(rng, range(3), 50)
    assert metrics.precision_recall(x, x) == (1.0, 1.0)
    far = clusters(rng, range(5, 8), 50) + 100.0
    assert metrics.precision_recall(x, far) == (0.0, 0.0)


def test_precision_recall_of_a_fake_set_covering_half_the_modes():
    """Fake samples from 5 of the 10 real modes: precision is that of a same-law fake set
    (about 1), recall half of a same-law set's, within binomial standard errors."""
    rng = np.random.default_rng(5)
    real = clusters(rng, range(10), 200)
    fake = clusters(rng, range(5), 200)
    got = metrics.precision_recall(real, fake, k=3)
    same_law = metrics.precision_recall(real, clusters(rng, range(10), 100))
    n_fake, n_real = fake.shape[0], real.shape[0]

    def binomial_se(p, n):
        return math.sqrt(max(p * (1 - p), 1.0 / n) / n)

    assert got.precision > 0.9
    se = math.hypot(binomial_se(same_law.precision, n_fake), binomial_se(got.precision, n_fake))
    assert abs(got.precision - same_law.precision) <= Z4 * se, (got, same_law)
    half = 0.5 * same_law.recall
    assert abs(got.recall - half) <= Z4 * math.hypot(binomial_se(got.recall, n_real),
                                                     0.5 * binomial_se(same_law.recall, n_real))
    assert 0.4 < got.recall <= 0.5
    with pytest.raises(ValueError, match=r"real_features must have at least 4 rows"):
        metrics.precision_recall(real[:3], fake)


# -------------------------------------------------------------------------- bits per dimension

def test_bits_per_dim_of_gaussian_data_equals_the_dequantised_gaussian_value():
    """Pixels u of a Gaussian N(m, C) in the model's scale x = (u + U) / 127.5 - 1. With the
    exact score and the exact log p_{t_max} the PF-ODE log-likelihood is exact to ~1e-9
    (order 4; docs/diffusion.md), so the bits per dimension are
    (-log N(x; m, C) + d ln 127.5) / (d ln 2) at the dequantised x. Its expectation over U is
    known in closed form (E x = (u + 1/2) / 127.5 - 1, Cov x = I / (12 127.5^2)); each
    image's value differs from it by the dequantisation noise, whose standard error over the
    images is the tolerance (4 SE = 0.002 bits). It resolves the constant: d ln 128 in place
    of d ln 127.5 with the same map shifts the result by log2(128 / 127.5) = 0.0056 bits
    (measured: 11.7 SE). (Mapping by 128 AND adding d ln 128 is another consistent model of
    the pixels, not an error: for data from the model the two shifts cancel to first order,
    and this test does not separate them.)"""
    rng = np.random.default_rng(6)
    d, n, s = 4, 200, 127.5
    mean = rng.uniform(-0.4, 0.4, d)
    cov = random_spd(rng, d, 0.02, 0.1)
    x = rng.multivariate_normal(mean, cov, n)
    u = np.clip(np.floor((x + 1) * s), 0, 255).astype(np.int32)
    sde = diffusion.VPSDE()
    with jax.enable_x64(True):
        prior = diffusion.scores.gaussian_log_prob(sde, mean, cov)
        bpd = np.asarray(metrics.bits_per_dim(
            jax.random.key(0), u, sde, diffusion.scores.gaussian(sde, mean, cov),
            num_steps=100, prior_logp=lambda y: prior(y, sde.t_max), t_min=1e-4))
    assert bpd.shape == (n,) and bpd.dtype == np.float64
    centre = (u + 0.5) / s - 1 - mean
    prec = np.linalg.inv(cov)
    nll = 0.5 * (np.linalg.slogdet(2 * np.pi * cov)[1]
                 + np.einsum("ni,ij,nj->n", centre, prec, centre) + np.trace(prec) / (12 * s ** 2))
    expected = (nll + d * math.log(s)) / (d * math.log(2))
    diff = bpd - expected
    se = diff.std(ddof=1) / math.sqrt(n)
    assert Z4 * se < math.log2(128 / 127.5)
    assert abs(diff.mean()) <= Z4 * se, (diff.mean(), se)


def test_bits_per_dim_uses_hutchinson_above_64_dimensions_and_checks_pixels():
    sde = diffusion.VPSDE()
    d = 72
    score = diffusion.scores.gaussian(sde, np.zeros(d), 0.1 * np.eye(d))
    u = np.random.default_rng(7).integers(100, 156, (3, d))
    key = jax.random.key(1)
    kwargs = dict(num_steps=3, num_levels=256)
    default = metrics.bits_per_dim(key, u, sde, score, **kwargs)
    hutchinson = metrics.bits_per_dim(key, u, sde, score, method="hutchinson", **kwargs)
    np.testing.assert_array_equal(default, hutchinson)
    with pytest.raises(ValueError, match=r"data must hold integer pixel values in \{0, ..., 15\}"):
        metrics.bits_per_dim(key, u, sde, score, num_levels=16)
    with pytest.raises(ValueError, match=r"integers: False"):
        metrics.bits_per_dim(key, u + 0.5, sde, score)
    with pytest.raises(TypeError, match=r"the key is the first argument: bits_per_dim"):
        metrics.bits_per_dim(u, key, sde, score)


# ------------------------------------------------------------------------ feature classifier

CLASSIFIER_STEPS = 500

def test_classifier_on_synthetic_images():
    """Ten classes of 8x8 images (Gaussian noise around class templates), sized as the
    digits test below so that the two share one compilation: the classifier separates them,
    and its features have the penultimate width."""
    rng = np.random.default_rng(8)
    templates = rng.normal(size=(10, 8, 8))
    labels = rng.integers(0, 10, 1797)
    images = templates[labels] + rng.normal(size=(1797, 8, 8))
    clf = metrics.digits_classifier(jax.random.key(0), images[:1500], labels[:1500],
                                    test_images=images[1500:], test_labels=labels[1500:],
                                    steps=CLASSIFIER_STEPS)
    assert clf.test_accuracy > 0.95
    assert clf.features(images[:5]).shape == (5, 128)
    assert clf.logits(images[:5]).shape == (5, 10)
    with pytest.raises(ValueError, match=r"images must have shape \(n, 8, 8\)"):
        clf.features(images[:5, :3])
    with pytest.raises(ValueError, match=r"test_images and test_labels go together"):
        metrics.digits_classifier(jax.random.key(0), images, labels, test_images=images)
    with pytest.raises(ValueError, match=r"labels must be integer class labels of shape"):
        metrics.digits_classifier(jax.random.key(0), images, labels[:10])


def test_digits_classifier_features_separate_real_digits_from_a_fitted_gaussian():
    """On scikit-learn's digits: >= 90% held-out accuracy after a second of training
    (measured 0.97-0.99 over splits, seeds and 500-2000 steps), and in its features two
    halves of the real digits are much closer than real digits and a Gaussian fitted to them
    (measured Frechet distance 3.8-6.1 against 28-29; precision 0.92 against 0.17)."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    rng = np.random.default_rng(9)
    perm = rng.permutation(digits.target.size)
    train, test = perm[:1500], perm[1500:]
    images = digits.images.astype(np.float32)
    clf = metrics.digits_classifier(jax.random.key(0), images[train], digits.target[train],
                                    test_images=images[test], test_labels=digits.target[test],
                                    steps=CLASSIFIER_STEPS)
    assert clf.test_accuracy >= 0.9
    half = digits.target.size // 2
    real_a, real_b = clf.features(images[perm[:half]]), clf.features(images[perm[half:2 * half]])
    flat = images.reshape(images.shape[0], -1)
    gauss = rng.multivariate_normal(flat.mean(0), np.cov(flat, rowvar=False), half)
    fake = clf.features(gauss.reshape(-1, 8, 8).astype(np.float32))
    real_vs_real = metrics.frechet_distance(real_a, real_b)
    real_vs_gauss = metrics.frechet_distance(real_a, fake)
    assert real_vs_real < 0.3 * real_vs_gauss, (real_vs_real, real_vs_gauss)
    assert metrics.precision_recall(real_a, fake).precision < 0.5 * \
        metrics.precision_recall(real_a, real_b).precision


def test_bits_per_dim_of_a_network_on_image_shaped_pixels_equals_its_per_point_score():
    """log_likelihood (and so bits_per_dim) takes a batched diffusion.Network with traced
    params and per-point conditions, and image-shaped data: a two-class exact Gaussian
    eps-network on (2, 2, 1) images gives each class's per-point-score result."""
    sde = diffusion.VPSDE()
    rng = np.random.default_rng(10)
    d, n = 4, 6
    cov = random_spd(rng, d, 0.02, 0.1)
    means = rng.uniform(-0.3, 0.3, (2, d))
    scores = [diffusion.scores.gaussian(sde, m, cov) for m in means]

    def apply_fn(params, x, t, cond):  # x (b, 2, 2, 1), t (b,), cond (b,) class labels
        flat = x.reshape(x.shape[0], d)
        score = jax.vmap(lambda y, c, tt: jax.lax.switch(c, scores, y, tt))(flat, cond, t)
        return (-params["scale"] * sde.sigma(t)[:, None] * score).reshape(x.shape)

    net = diffusion.Network(apply_fn, prediction="eps")
    labels = np.array([0, 1, 1, 0, 1, 0])
    u = rng.integers(100, 156, (n, 2, 2, 1))
    key = jax.random.key(3)
    x = (u.reshape(n, d) + 0.5) / 127.5 - 1
    with jax.enable_x64(True):
        via_net = diffusion.log_likelihood(x.reshape(u.shape), sde, net, params={"scale": 1.0},
                                           cond=labels, num_steps=20)
        for c in (0, 1):
            via_score = diffusion.log_likelihood(x[labels == c], sde, scores[c], num_steps=20)
            # the same float64 arithmetic in another order: round-off ~1e-14 relative
            np.testing.assert_allclose(via_net[labels == c], via_score, rtol=1e-10)
        got = metrics.bits_per_dim(key, u, sde, net, params={"scale": 1.0}, cond=labels,
                                   num_steps=20)  # the same compiled likelihood
    assert got.shape == (n,) and np.all(np.isfinite(got))
    with pytest.raises(ValueError, match=r"cond must be a batch with one row per point"):
        metrics.bits_per_dim(key, u, sde, net, params={"scale": 1.0}, cond=labels[:3])

"""Targets against answers computed outside the code under test.

Log-densities are compared with scipy.stats (differences between points, so normalising
constants cancel); exact moments with closed forms derived here, with scipy, with
quadrature, and with Monte Carlo of the exact samplers at 5 standard errors.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats as st

from mc import assert_within, se_mean
from samplers import targets

N_MC = 100_000  # one sample size everywhere: each jitted sampler compiles once
RNG = np.random.default_rng(20240601)

# ------------------------------------------------------------------------- fixtures

MEAN3 = np.array([1.0, -2.0, 0.5])
A3 = RNG.normal(size=(3, 3))
COV3 = A3 @ A3.T + np.eye(3)

MIX_W = np.array([0.3, 0.7])
MIX_M = np.array([[0.0, 0.0], [3.0, 1.0]])
MIX_S = np.array([np.eye(2), [[2.0, 0.5], [0.5, 1.0]]])

LIN_X = RNG.normal(size=(30, 3))
LIN_Y = LIN_X @ np.array([1.0, -1.0, 0.5]) + 0.7 * RNG.normal(size=30)
LIN_NOISE, LIN_PRIOR = 0.7, 2.0

LOG_X = RNG.normal(size=(100, 2))
LOG_Y = (RNG.random(100) < scipy.special.expit(LOG_X @ np.array([1.0, -0.5]))).astype(float)
LOG_PRIOR = 2.0

ALPHA = np.array([2.0, 3.0, 0.7])


def _factories():
    """name -> (factory thunk, independent scipy log-density, random point generator)."""
    def mixture_logpdf(x):
        components = zip(MIX_W, MIX_M, MIX_S)
        return scipy.special.logsumexp(
            [math.log(w) + st.multivariate_normal(m, s).logpdf(x) for w, m, s in components]
        )

    def funnel_logpdf(p):
        return st.norm.logpdf(p[0], 0.0, 1.0) + st.norm.logpdf(p[1:], 0.0, math.exp(p[0] / 2)).sum()

    def normal_points(d):
        return lambda rng: rng.normal(size=(5, d))

    return {
        "gaussian": (lambda: targets.gaussian(MEAN3, COV3),
                     st.multivariate_normal(MEAN3, COV3).logpdf, normal_points(3)),
        "gaussian_mixture": (lambda: targets.gaussian_mixture(MIX_W, MIX_M, MIX_S),
                             mixture_logpdf, normal_points(2)),
        "bayesian_linear_regression": (
            lambda: targets.bayesian_linear_regression(LIN_X, LIN_Y, LIN_NOISE, LIN_PRIOR),
            lambda w: st.norm.logpdf(w, 0, LIN_PRIOR).sum()
            + st.norm.logpdf(LIN_Y, LIN_X @ w, LIN_NOISE).sum(),
            normal_points(3)),
        "bayesian_logistic_regression": (
            lambda: targets.bayesian_logistic_regression(LOG_X, LOG_Y, LOG_PRIOR, num_draws=2000),
            lambda w: st.norm.logpdf(w, 0, LOG_PRIOR).sum()
            + st.bernoulli.logpmf(LOG_Y, scipy.special.expit(LOG_X @ w)).sum(),
            normal_points(2)),
        "dirichlet": (lambda: targets.dirichlet(ALPHA),
                      lambda p: st.dirichlet.logpdf(np.append(p, 1 - p.sum()), ALPHA),
                      lambda rng: rng.dirichlet(ALPHA, size=5)[:, :-1]),
        "banana": (lambda: targets.banana(),
                   lambda p: st.norm.logpdf(p[0], 0, 10.0)
                   + st.norm.logpdf(p[1], -0.1 * (p[0] ** 2 - 100.0), 1.0),
                   lambda rng: rng.normal(size=(5, 2)) * [10.0, 5.0]),
        # scale 1, not the default 3: at scale 3, Var(x_i^2) = 3 e^18 - e^9 is too heavy-tailed
        # for a Monte Carlo standard error to be trusted at any affordable n.
        "funnel": (lambda: targets.funnel(d=4, scale=1.0), funnel_logpdf, normal_points(4)),
    }


FACTORIES = _factories()


@functools.cache
def target32(name):
    """The float32 target of FACTORIES[name], built once."""
    return FACTORIES[name][0]()


@functools.cache
def value_and_grad32(name):
    """Jitted, vmapped value and gradient of target32(name).logdensity_fn, compiled once."""
    return jax.jit(jax.vmap(jax.value_and_grad(target32(name).logdensity_fn)))


def assert_moments_match_sampler(target, key, n):
    """Sample mean and covariance of n exact draws within 5 standard errors.

    The covariance estimator is centred at the exact mean, so entry (i, j) is a plain
    average of (x_i - m_i)(x_j - m_j) whose standard error is its sample sd / sqrt(n).
    """
    x = np.asarray(target.sample(key, n), dtype=np.float64)
    mean, cov = np.asarray(target.mean, np.float64), np.asarray(target.cov, np.float64)
    assert_within(x.mean(axis=0), se_mean(x), mean, what="mean")
    centred = x - mean
    products = centred[:, :, None] * centred[:, None, :]
    assert_within(products.mean(axis=0), se_mean(products), cov, what="covariance")


# ------------------------------------------------------------------------ log-densities

@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_logdensity_matches_scipy_up_to_a_constant(name):
    factory, reference, points = FACTORIES[name]
    pts = points(np.random.default_rng(1))
    with jax.enable_x64(True):
        target = factory()
        ours = np.asarray(jax.jit(jax.vmap(target.logdensity_fn))(jnp.asarray(pts)))
    theirs = np.array([reference(p) for p in pts])
    np.testing.assert_allclose(ours - ours[0], theirs - theirs[0], rtol=1e-10, atol=1e-10)


def test_regression_logdensity_is_prior_plus_per_datum_likelihoods():
    w = np.array([0.3, -0.2, 1.0])
    with jax.enable_x64(True):
        target = targets.bayesian_linear_regression(LIN_X, LIN_Y, LIN_NOISE, LIN_PRIOR)

        @jax.jit
        def pieces(w):
            by_datum = jax.vmap(target.loglik_fn, (None, 0))(w, target.data)
            return target.logdensity_fn(w), target.logprior_fn(w), by_datum

        total, prior, by_datum = (np.asarray(a) for a in pieces(w))
    assert total == pytest.approx(prior + by_datum.sum(), rel=1e-12)
    np.testing.assert_allclose(by_datum, st.norm.logpdf(LIN_Y, LIN_X @ w, LIN_NOISE), rtol=1e-12)
    assert prior == pytest.approx(st.norm.logpdf(w, 0.0, LIN_PRIOR).sum(), rel=1e-12)


def test_dirichlet_is_minus_infinity_outside_the_open_simplex_with_finite_gradients():
    points = jnp.asarray([[0.5, 0.6], [-0.1, 0.5], [0.0, 0.5], [0.5, 0.5], [0.2, 0.3]])
    value, grad = value_and_grad32("dirichlet")(points)
    assert np.all(np.isneginf(value[:4])) and np.isfinite(value[4])
    assert np.all(np.isfinite(grad))


# ---------------------------------------------------------------- exact moments

@pytest.mark.parametrize("name", sorted(set(FACTORIES) - {"bayesian_logistic_regression"}))
def test_exact_moments_match_monte_carlo_of_exact_sampler(name):
    assert_moments_match_sampler(target32(name), jax.random.key(7), N_MC)


def test_banana_and_funnel_moments_match_derived_closed_forms():
    # banana: x2 = -b (x1^2 - s^2) + e, x1 ~ N(0, s^2): Var x2 = b^2 * 2 s^4 + 1 = 201.
    np.testing.assert_allclose(targets.banana().cov, [[100.0, 0.0], [0.0, 201.0]], rtol=1e-6)
    small = targets.banana(b=0.5, sigma1=2.0)  # Var x2 = 2 * 0.25 * 16 + 1 = 9
    np.testing.assert_allclose(small.cov, np.diag([4.0, 9.0]), rtol=1e-6)
    np.testing.assert_array_equal(targets.banana().mean, [0.0, 0.0])
    # funnel: Var x_i = E[e^v] = lognormal mean e^{9/2}.
    expected = np.diag([9.0] + [math.exp(4.5)] * 9)
    np.testing.assert_allclose(targets.funnel().cov, expected, rtol=1e-6)
    np.testing.assert_array_equal(targets.funnel().mean, np.zeros(10))


def test_dirichlet_moments_match_scipy():
    target = targets.dirichlet(ALPHA)
    np.testing.assert_allclose(target.mean, st.dirichlet.mean(ALPHA)[:-1], rtol=1e-6)
    np.testing.assert_allclose(target.cov, st.dirichlet.cov(ALPHA)[:-1, :-1], rtol=1e-5, atol=1e-8)


def test_mixture_moments_match_quadrature_in_one_dimension():
    w, m, s = np.array([0.2, 0.5, 0.3]), np.array([-2.0, 0.5, 3.0]), np.array([0.5, 1.0, 2.0])
    with jax.enable_x64(True):
        target = targets.gaussian_mixture(w, m[:, None], (s**2)[:, None, None])
        mean, var = float(target.mean[0]), float(target.cov[0, 0])

    def pdf(x):
        return np.sum(w * st.norm.pdf(x, m, s))

    moments = [scipy.integrate.quad(lambda x, k=k: x**k * pdf(x), -np.inf, np.inf, epsabs=1e-12)[0]
               for k in (1, 2)]
    assert mean == pytest.approx(moments[0], abs=1e-8)
    assert var == pytest.approx(moments[1] - moments[0] ** 2, rel=1e-8)


def test_linear_regression_posterior_matches_conditioning_formula():
    # Joint Gaussian (w, y): w ~ N(0, t^2 I), y = X w + e; condition on y with the
    # (n x n) gain form, an algebraically different route from the precision form.
    t2, s2 = LIN_PRIOR**2, LIN_NOISE**2
    gram = t2 * LIN_X @ LIN_X.T + s2 * np.eye(LIN_X.shape[0])
    gain = t2 * np.linalg.solve(gram, LIN_X).T
    with jax.enable_x64(True):
        target = targets.bayesian_linear_regression(LIN_X, LIN_Y, LIN_NOISE, LIN_PRIOR)
        grad, hessian = jax.jit(lambda w: (jax.grad(target.logdensity_fn)(w),
                                           jax.hessian(target.logdensity_fn)(w)))(target.mean)
    np.testing.assert_allclose(target.mean, gain @ LIN_Y, rtol=1e-10)
    np.testing.assert_allclose(target.cov, t2 * (np.eye(3) - gain @ LIN_X), rtol=1e-10, atol=1e-14)
    # the Gaussian log posterior peaks at its mean and has Hessian -cov^{-1}
    np.testing.assert_allclose(grad, 0.0, atol=1e-9)
    np.testing.assert_allclose(hessian, -np.linalg.inv(np.asarray(target.cov)), rtol=1e-9)


def test_make_linear_regression_simulates_its_dataset():
    target = targets.make_linear_regression(jax.random.key(3), n=50, d=4, noise_scale=0.5)
    X, y = target.data
    assert (X.shape, y.shape, target.dim) == ((50, 4), (50,), 4)
    again = targets.make_linear_regression(jax.random.key(3), n=50, d=4, noise_scale=0.5)
    np.testing.assert_array_equal(again.data[1], y)
    np.testing.assert_array_equal(again.mean, target.mean)


# ------------------------------------------------------------- logistic regression

def test_logistic_reference_matches_grid_quadrature():
    target = targets.bayesian_logistic_regression(LOG_X, LOG_Y, LOG_PRIOR)
    ref = target.reference
    assert set(ref) >= {"mean_se", "cov_se", "ess", "num_draws", "mode", "laplace_cov", "method"}
    # tensor grid over mode +- 10 Laplace sds; the integrand is smooth and decays like a
    # Gaussian, so the uniform Riemann sum is exponentially accurate once the grid edges
    # carry negligible mass (checked below).
    sd = np.sqrt(np.diag(ref["laplace_cov"]))
    axes = [np.linspace(c - 10 * s, c + 10 * s, 201) for c, s in zip(ref["mode"], sd)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    logp = (st.norm.logpdf(grid, 0, LOG_PRIOR).sum(axis=1)
            + (LOG_Y * (grid @ LOG_X.T) - np.logaddexp(0, grid @ LOG_X.T)).sum(axis=1))
    p = np.exp(logp - logp.max()).reshape(201, 201)
    edges = np.concatenate([p[0], p[-1], p[:, 0], p[:, -1]])
    assert edges.max() < 1e-12
    p = p.reshape(-1) / p.sum()
    mean = p @ grid
    cov = (grid - mean).T @ ((grid - mean) * p[:, None])
    assert_within(target.mean, ref["mean_se"], mean, what="mean")
    assert_within(target.cov, ref["cov_se"], cov, what="covariance")


# ------------------------------------------------------------------------- behaviour

@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_float32_logdensity_jits_vmaps_and_differentiates(name):
    target = target32(name)
    if target.sample is None:
        x = jnp.asarray(FACTORIES[name][2](np.random.default_rng(2)), jnp.float32)
    else:
        draws = target.sample(jax.random.key(1), N_MC)
        assert draws.shape == (N_MC, target.dim) and draws.dtype == jnp.float32
        np.testing.assert_array_equal(target.sample(jax.random.key(1), N_MC), draws)
        x = draws[:5]
    value, grad = value_and_grad32(name)(x)
    assert value.shape == (5,) and value.dtype == jnp.float32
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    assert target.mean.shape == (target.dim,) and target.cov.shape == (target.dim, target.dim)


@pytest.mark.parametrize("build, exc, argument", [
    (lambda: targets.gaussian(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]])), ValueError, "cov"),
    (lambda: targets.gaussian(np.zeros(2), np.eye(3)), ValueError, "cov"),
    (lambda: targets.gaussian(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]])), ValueError, "cov"),
    (lambda: targets.gaussian(np.zeros((2, 1)), np.eye(2)), ValueError, "mean"),
    (lambda: targets.gaussian([0.0, np.nan], np.eye(2)), ValueError, "mean"),
    (lambda: targets.gaussian("a", np.eye(2)), TypeError, "mean"),
    (lambda: targets.gaussian_mixture([0.5, 0.6], MIX_M, MIX_S), ValueError, "weights"),
    (lambda: targets.gaussian_mixture(MIX_W, MIX_M[:1], MIX_S), ValueError, "means"),
    (lambda: targets.gaussian_mixture(MIX_W, MIX_M, MIX_S[:, :1]), ValueError, "covs"),
    (lambda: targets.gaussian_mixture(MIX_W, MIX_M, np.array([np.eye(2), -np.eye(2)])), ValueError,
     r"covs\[1\]"),
    (lambda: targets.bayesian_linear_regression(LIN_X, LIN_Y[:-1], 1.0, 1.0), ValueError, "y"),
    (lambda: targets.bayesian_linear_regression(LIN_X[0], LIN_Y, 1.0, 1.0), ValueError, "X"),
    (lambda: targets.bayesian_linear_regression(LIN_X, LIN_Y, 0.0, 1.0), ValueError, "noise_scale"),
    (lambda: targets.bayesian_linear_regression(LIN_X, LIN_Y, 1, -1.0), ValueError, "prior_scale"),
    (lambda: targets.make_linear_regression(jax.random.key(0), 0, 2), ValueError, "n"),
    (lambda: targets.make_linear_regression(jax.random.key(0), 5, 2.5), TypeError, "d"),
    (lambda: targets.bayesian_logistic_regression(LOG_X, LOG_Y + 1, 1.0), ValueError, "y"),
    (lambda: targets.bayesian_logistic_regression(LOG_X, LOG_Y, 0.0), ValueError, "prior_scale"),
    (lambda: targets.dirichlet([1.0]), ValueError, "alpha"),
    (lambda: targets.dirichlet([1.0, 0.0]), ValueError, "alpha"),
    (lambda: targets.banana(sigma1=-1.0), ValueError, "sigma1"),
    (lambda: targets.banana(b=float("inf")), ValueError, "b"),
    (lambda: targets.funnel(d=1), ValueError, "d"),
    (lambda: targets.funnel(scale=0.0), ValueError, "scale"),
])
def test_bad_arguments_raise_naming_the_argument(build, exc, argument):
    with pytest.raises(exc, match=rf"^{argument} "):
        build()

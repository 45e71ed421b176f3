"""Exact facts of the Langevin samplers: closed forms computed here, never by samplers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
from mc import Z, assert_within, mc_mean, se_mean


def _rotated_gaussian(d, eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    cov = (q * eigenvalues) @ q.T
    return cov, np.linalg.inv(cov)


def test_mala_recovers_a_correlated_gaussian_and_hits_its_acceptance_target():
    d = 20
    cov, prec = _rotated_gaussian(d, np.logspace(np.log10(0.3), np.log10(3.0), d))
    mean = np.linspace(-1, 1, d)
    prec_j, mean_j = jnp.asarray(prec, jnp.float32), jnp.asarray(mean, jnp.float32)

    def logdensity(x):
        r = x - mean_j
        return -0.5 * r @ prec_j @ r

    trace = samplers.run(jax.random.key(0), samplers.mala(logdensity, 0.1), jnp.zeros(d),
                         10_000, num_chains=8, num_warmup=1000, thin=2)
    x = np.asarray(trace.positions, dtype=np.float64)  # (chain, draw, d)
    white = (x - mean) @ np.linalg.cholesky(prec)  # N(0, I) under the target
    for i in range(d):
        m, se = mc_mean(white[..., i])
        assert_within(m, se, 0.0, what=f"whitened mean {i}")
    for i in range(d):
        for j in range(i, d):
            m, se = mc_mean(white[..., i] * white[..., j])
            assert_within(m, se, float(i == j), what=f"whitened covariance ({i}, {j})")
    acceptance = float(np.mean(trace.stats["acceptance_rate"]))
    assert abs(acceptance - 0.574) < 0.05


def test_mala_is_exact_where_ula_is_biased():
    """N(0, 1) at h = 1: ULA's variance would be 2; MALA's is 1 with acceptance 0.7838."""
    trace = samplers.run(jax.random.key(1), samplers.mala(lambda x: -0.5 * jnp.sum(x ** 2), 1.0),
                         jnp.zeros(1), 4000, num_chains=200, num_warmup=200,
                         adapt_step_size=False, adapt_mass_matrix=False)
    x = np.asarray(trace.positions)[..., 0]
    assert_within(*mc_mean(x ** 2), 1.0, what="MALA variance")
    a = np.asarray(trace.stats["acceptance_rate"])
    # the note's value is itself a Monte Carlo estimate (±0.001)
    assert_within(a.mean(), np.hypot(mc_mean(a)[1], 0.001 / Z), 0.7838,
                  what="acceptance")


def test_ula_synchronous_coupling_contracts_exactly():
    """Two ULA chains with shared noise on N(0, A^{-1}): x_k - y_k = (I - hA)^k (x_0 - y_0)."""
    _, prec = _rotated_gaussian(3, np.array([1 / 0.5, 1 / 2.0, 1 / 8.0]), seed=1)
    h = 0.2
    alg = samplers.ula(lambda x: -0.5 * x @ jnp.asarray(prec, jnp.float32) @ x, h)
    step = jax.jit(alg.step)
    x, y = alg.init(jnp.array([3.0, -1.0, 2.0])), alg.init(jnp.array([-2.0, 0.5, 1.0]))
    diff0 = np.asarray(x.position - y.position, np.float64)
    b = np.eye(3) - h * prec
    alpha = np.linalg.eigvalsh(prec).min()
    for k in range(1, 31):
        key = jax.random.key(k)
        x, y = step(key, x)[0], step(key, y)[0]
        expected = np.linalg.matrix_power(b, k) @ diff0
        np.testing.assert_allclose(x.position - y.position, expected, atol=1e-5 * np.abs(diff0).max())
        assert np.linalg.norm(expected) <= (1 - h * alpha) ** k * np.linalg.norm(diff0) + 1e-12


def _gaussian_mean_data(n=100):
    return jnp.asarray(np.random.default_rng(2).normal(1.0, 1.5, n), jnp.float32)


def test_minibatch_gradient_is_unbiased_and_control_variate_is_exact_at_centre():
    data = _gaussian_mean_data()
    logprior = lambda th: -0.5 * jnp.sum(th ** 2)  # noqa: E731
    loglik = lambda th, x: -0.5 * jnp.sum((x - th) ** 2)  # noqa: E731
    full = jax.grad(lambda th: logprior(th) + jnp.sum(jax.vmap(loglik, (None, 0))(th, data)))
    theta = jnp.array([0.3])
    batches = samplers.data.minibatches(data, 10)
    draws = jax.vmap(batches.sample)(jax.random.split(jax.random.key(0), 4000))
    plain = samplers.minibatch_gradient(logprior, loglik, data.shape[0])
    g = np.asarray(jax.vmap(plain, (None, 0))(theta, draws))[:, 0]
    assert_within(g.mean(), se_mean(g, axis=None, ddof=0), float(full(theta)[0]), what="E[g]")
    centre = jnp.array([float(jnp.sum(data)) / 101])
    cv = samplers.minibatch_gradient(logprior, loglik, data.shape[0], centre=centre, data=data)
    g_cv = np.asarray(jax.vmap(cv, (None, 0))(centre, draws[:20]))
    np.testing.assert_allclose(g_cv, np.broadcast_to(full(centre), g_cv.shape), atol=1e-4)
    # the Gaussian likelihood's gradient is linear in theta: the control variate cancels the
    # minibatch noise exactly at every theta (up to float32 round-off)
    g_cv_off = np.asarray(jax.vmap(cv, (None, 0))(theta, draws[:20]))
    np.testing.assert_allclose(g_cv_off, np.broadcast_to(full(theta), g_cv_off.shape), rtol=1e-5)
    assert g.std() > 10.0  # while the plain estimator's noise is large
    with pytest.raises(ValueError, match="centre and data must be given together"):
        samplers.minibatch_gradient(logprior, loglik, 100, centre=centre)


def test_sgld_step_size_schedule_is_reported():
    schedule = lambda k: 0.1 / (1.0 + k) ** 0.55  # noqa: E731  (Teh et al. 2016 decay)
    alg = samplers.sgld(lambda x, batch: -x, schedule)
    trace = samplers.run(jax.random.key(0), alg, jnp.zeros(1), 10)
    np.testing.assert_allclose(trace.stats["step_size"][0], 0.1 / (1.0 + np.arange(10)) ** 0.55,
                               rtol=1e-6)


def test_sgld_recovers_the_bayesian_linear_regression_posterior_mean():
    """The minibatch gradient is affine in w with noise independent of w, so SGLD's stationary
    mean is the exact posterior mean at any stable step (its variance is what is biased)."""
    target = samplers.targets.make_linear_regression(jax.random.key(4), n=200, d=3)
    grad = samplers.minibatch_gradient(target.logprior_fn, target.loglik_fn, 200)
    h = 0.1 / float(np.linalg.eigvalsh(np.linalg.inv(target.cov)).max())
    trace = samplers.run(jax.random.key(5), samplers.sgld(grad, h), jnp.zeros(3), 3000,
                         num_chains=100, num_warmup=500, thin=3,
                         batches=samplers.data.minibatches(target.data, 20))
    x = np.asarray(trace.positions)
    for i in range(3):
        assert_within(*mc_mean(x[..., i]), float(target.mean[i]), what=f"posterior mean {i}")


@pytest.mark.parametrize("metric", ["identity", "diagonal", "dense"])
def test_energy_error_is_minus_the_log_metropolis_hastings_ratio(metric):
    """ULA's reported energy error against log p and the Gaussian proposal densities
    q(y | x) = N(y; x + h C g(x), 2 h T C) evaluated by scipy in float64, at T = 1 and 2."""
    import scipy.stats

    d, h = 4, 0.3
    cov, prec = _rotated_gaussian(d, np.array([0.5, 1.0, 2.0, 4.0]), seed=3)
    logp = lambda x: -0.5 * x @ jnp.asarray(prec, jnp.float32) @ x + jnp.sum(jnp.sin(x))  # noqa: E731
    C = {"identity": None, "diagonal": np.array([0.5, 1.0, 1.5, 2.0]),
         "dense": _rotated_gaussian(d, np.array([0.3, 1.0, 1.2, 2.5]), seed=4)[0]}[metric]
    C64 = np.eye(d) if C is None else (np.diag(C) if C.ndim == 1 else C)
    logp64 = lambda x: -0.5 * x @ prec @ x + np.sum(np.sin(x))  # noqa: E731
    grad64 = lambda x: -prec @ x + np.cos(x)  # noqa: E731
    for temperature in (1.0, 2.0):
        alg = samplers.ula(logp, h, temperature=temperature, inverse_mass_matrix=C)
        for seed in range(5):
            x = np.random.default_rng(seed).normal(size=d)
            state, info = alg.step(jax.random.key(seed), alg.init(jnp.asarray(x, jnp.float32)))
            x = np.float64(np.asarray(alg.init(jnp.asarray(x, jnp.float32)).position))
            y = np.asarray(state.position, np.float64)
            q = lambda b, a: scipy.stats.multivariate_normal(  # noqa: E731
                a + h * C64 @ grad64(a), 2 * h * temperature * C64).logpdf(b)
            terms = np.array([logp64(x) / temperature, logp64(y) / temperature, q(y, x), q(x, y)])
            expected = terms[0] - terms[1] + terms[2] - terms[3]
            # float32 rounding of each term, with a margin of 100 for the sums over d
            tol = 100 * np.finfo(np.float32).eps * np.sum(np.abs(terms))
            assert abs(float(info.energy_error) - expected) <= tol, (metric, temperature, seed)

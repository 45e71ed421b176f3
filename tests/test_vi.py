"""vi: exact facts of FB-GVI and its baselines, the Gaussian type, behaviour, bad input.

Reference: Diao, Balasubramanian, Chewi, Salim, ICML 2023, arXiv 2304.05398 ([Diao2023]).
Expected numbers come from closed forms computed here in numpy/scipy (or from the shared
method note, where they were computed independently in float64), never from vi itself.
Guarantee checks (contraction, stochastic error floor, logistic regression) live in
tests/theory/test_fbgvi_guarantees.py.
"""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
import scipy.linalg
import scipy.optimize
import scipy.special
import scipy.stats

import samplers
import vi
from mc import assert_within, mc_mean, se_mean

D = 5


def gaussian_problem(seed=0, d=D, kappa=20.0):
    """N(mu, A^{-1}), A with eigenvalues geomspace(1, kappa, d) in a random rotation."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.geomspace(1.0, kappa, d)
    A = (Q * lam) @ Q.T
    mu = rng.uniform(0.0, 1.0, d)
    return A, mu, lam


def quadratic_logdensity(A, mu):
    def logdensity_fn(x):
        diff = x - jnp.asarray(mu, x.dtype)
        return -0.5 * diff @ (jnp.asarray(A, x.dtype) @ diff)
    return logdensity_fn


# ------------------------------------------------------------------ backward (JKO) step

def test_backward_step_matches_the_note_closed_form_values():
    # G1 of the method note: computed in float64 from 1/2(S + 2hI + (S(S + 4hI))^{1/2}).
    with jax.enable_x64(True):
        scale, low = vi.jko_entropy_step(jnp.array([[2.0, 0.7], [0.7, 0.5]]), 0.3)
        cov = np.asarray(scale @ scale.T)
        low = float(low)
    expected = np.array([[2.555186, 0.733416], [0.733416, 0.983581]])
    np.testing.assert_allclose(cov, expected, atol=1e-6)
    assert low >= 0.3


def _bures_sq(S1, S2):
    r = scipy.linalg.sqrtm(S2)
    return np.trace(S1) + np.trace(S2) - 2.0 * np.trace(np.real(scipy.linalg.sqrtm(r @ S1 @ r)))


@pytest.mark.parametrize("cov, h", [([[2.0, 0.7], [0.7, 0.5]], 0.3), ([[0.2, -0.15], [-0.15, 1.4]], 1.1)])
def test_backward_step_is_the_jko_minimiser_scipy(cov, h):
    """argmin over 2x2 SPD S of h * (-1/2 log det S) + Bures^2(cov, S) / 2 (the entropy's
    JKO step; the mean part is |m - m'|^2 / 2, minimised at m' trivially), found by
    Nelder-Mead over a Cholesky parametrisation, agrees with the closed form."""
    cov = np.array(cov)

    def objective(p):
        L = np.array([[np.exp(p[0]), 0.0], [p[1], np.exp(p[2])]])
        S = L @ L.T
        return -h * 0.5 * np.linalg.slogdet(S)[1] + 0.5 * _bures_sq(cov, S)

    res = scipy.optimize.minimize(objective, np.zeros(3), method="Nelder-Mead",
                                  options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000})
    L = np.array([[np.exp(res.x[0]), 0.0], [res.x[1], np.exp(res.x[2])]])
    with jax.enable_x64(True):
        scale, _ = vi.jko_entropy_step(jnp.asarray(cov), h)
        closed = np.asarray(scale @ scale.T)
    np.testing.assert_allclose(L @ L.T, closed, atol=1e-6)
    assert objective(res.x) >= objective(np.array([np.log(np.linalg.cholesky(closed)[0, 0]),
                                                    np.linalg.cholesky(closed)[1, 0],
                                                    np.log(np.linalg.cholesky(closed)[1, 1])])) - 1e-12


def test_backward_step_is_spd_for_a_singular_forward_covariance():
    # A forward covariance M S M is singular when h = 1/lambda; rounding can make it
    # slightly indefinite. The backward step must still return eigenvalues >= h.
    v = np.array([[0.6, 0.8], [-0.8, 0.6]])
    cov = (v * np.array([-1e-7, 2.0])) @ v.T
    scale, low = vi.jko_entropy_step(jnp.asarray(cov, jnp.float32), 0.25)
    eig = np.linalg.eigvalsh(np.asarray(scale @ scale.T, np.float64))
    assert np.all(np.isfinite(eig)) and eig.min() >= 0.25 * (1 - 1e-6) and low >= 0.25 * (1 - 1e-6)


# ------------------------------------------------------------------------- recursions

@pytest.mark.parametrize("method, h, lam, s0, expected_s", [
    # method note, G2-G4 (scalar target N(mu, 1/lam)); means from m_k - mu = (1 - h lam)^k (m_0 - mu)
    ("fbgvi", 0.25, 2.0, 1.0, [0.654508, 0.549988, 0.516487]),
    ("bwgd", 0.25, 2.0, 1.0, [0.5625, 0.501736, 0.500002]),
    ("fbgvi", 1.0, 1.0, 4.0, [1.0, 1.0, 1.0]),
    ("bwgd", 1.0, 1.0, 4.0, [0.25, 4.0, 0.25]),
    ("fbgvi", 1.5, 1.0, 1.0, [2.25, 2.741902, 2.913103]),
])
def test_scalar_recursions_match_closed_forms(method, h, lam, s0, expected_s):
    with jax.enable_x64(True):
        lp = quadratic_logdensity(np.array([[lam]]), np.array([1.0]))
        alg = getattr(vi, method)(lp, h, expectation="exact_gaussian")
        q0 = vi.Gaussian(jnp.zeros(1), jnp.sqrt(s0) * jnp.ones((1, 1)))
        _, tr = vi.fit(jax.random.key(0), alg, q0, 3)
        np.testing.assert_allclose(np.asarray(tr.positions.cov).ravel(), expected_s, atol=1e-6)
        np.testing.assert_allclose(np.asarray(tr.positions.mean).ravel(),
                                   1.0 - (1.0 - h * lam) ** np.arange(1, 4), atol=1e-12)


@pytest.mark.parametrize("expectation", ["exact_gaussian", "gauss_hermite"])
def test_gaussian_target_fixed_point_is_the_target_exactly(expectation):
    """[Diao2023]: on a Gaussian target the best Gaussian is pi itself; FB-GVI with exact
    expectations (quadrature with 2 points is exact for quadratic V) converges to (mu, Sigma)."""
    A, mu, lam = gaussian_problem()
    with jax.enable_x64(True):
        alg = vi.fbgvi(quadratic_logdensity(A, mu), 0.5 / lam.max(), expectation=expectation,
                       num_points=2)
        q, _ = vi.fit(jax.random.key(0), alg, vi.Gaussian.standard(D), 2000, thin=2000)
        np.testing.assert_allclose(np.asarray(q.mean), mu, atol=1e-10)
        np.testing.assert_allclose(np.asarray(q.cov), np.linalg.inv(A), atol=1e-10)
        # started at the target, it stays there (a fixed point, not just a limit)
        start = vi.Gaussian.from_cov(mu, np.linalg.inv(A))
        q1, _ = vi.fit(jax.random.key(1), alg, start, 2000, thin=2000)
        np.testing.assert_allclose(np.asarray(q1.cov), np.linalg.inv(A), atol=1e-12)


def test_stein_hessian_estimator_is_unbiased_with_a_non_symmetric_factor():
    """E[C^{-T} u grad V(m + C u)^T] = E[hess V] = A (Stein's lemma); a lower-triangular C
    tells C^{-T} apart from C^{-1} (AdvancedVI.jl's bug was omitting that factor)."""
    A, mu, _ = gaussian_problem(seed=1)
    rng = np.random.default_rng(2)
    C = np.tril(rng.uniform(0.3, 1.0, (D, D))) + np.eye(D)
    q = vi.Gaussian(jnp.asarray(rng.standard_normal(D), jnp.float32), jnp.asarray(C, jnp.float32))
    V = lambda x: -quadratic_logdensity(A, mu)(x)  # noqa: E731
    u = jnp.asarray(rng.standard_normal((20_000, 1, D)), jnp.float32)
    one = jax.jit(jax.vmap(lambda ui: vi.expected_grad_hess(V, q, ui, jnp.ones(1), "stein")[1]))
    H = np.asarray(one(u), np.float64)
    mean, se = H.mean(0), se_mean(H, ddof=0)
    assert_within(mean, se, A, what="E[hess V] by Stein's lemma")
    wrong = np.linalg.solve(C, np.linalg.inv(C).T @ A)  # what omitting a factor would average to
    assert np.abs(mean - wrong).max() > 10 * se.max()


# ---------------------------------------------------------------------- Gaussian type

def test_gaussian_type_sample_logpdf_entropy_to_arviz():
    rng = np.random.default_rng(3)
    mean = rng.standard_normal(3)
    B = rng.standard_normal((3, 3))
    cov = B @ B.T + 0.5 * np.eye(3)
    q = vi.Gaussian.from_cov(mean, cov)
    np.testing.assert_allclose(np.asarray(q.cov), cov, rtol=1e-5, atol=1e-5)
    x = np.asarray(q.sample(jax.random.key(0), 20_000), np.float64)
    se = np.sqrt(np.diag(cov) / x.shape[0])
    assert_within(x.mean(0), se, mean, what="sample mean")
    # variance: se of a sample variance is var * sqrt(2 / n)
    var_se = np.diag(cov) * np.sqrt(2.0 / x.shape[0])
    assert np.all(np.abs(x.var(0) - np.diag(cov)) < 5 * var_se)
    pts = rng.standard_normal((4, 3))
    np.testing.assert_allclose(np.asarray(q.logpdf(pts)),
                               scipy.stats.multivariate_normal(mean, cov).logpdf(pts), rtol=1e-5)
    np.testing.assert_allclose(float(q.entropy()),
                               scipy.stats.multivariate_normal(mean, cov).entropy(), rtol=1e-5)
    idata = q.to_arviz(jax.random.key(1), num_draws=50, num_chains=2)
    assert tuple(idata.posterior["x"].shape) == (2, 50, 3)
    s = vi.Gaussian.standard(4)
    assert s.mean.dtype == jnp.float32 and np.allclose(s.cov, np.eye(4))


# ------------------------------------------------------------------------- behaviour

def test_bad_input_gives_clear_errors():
    lp = quadratic_logdensity(np.eye(3), np.zeros(3))
    for h in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="step_size"):
            vi.fbgvi(lp, h)
    with pytest.raises(TypeError, match="step_size"):
        vi.sfbgvi(lp, "big")
    with pytest.raises(ValueError, match="expectation"):
        vi.fbgvi(lp, 0.1, expectation="laplace")
    with pytest.raises(ValueError, match="hessian"):
        vi.fbgvi(lp, 0.1, hessian="bfgs")
    with pytest.raises(ValueError, match="stein"):
        vi.fbgvi(lp, 0.1, expectation="exact_gaussian", hessian="stein")
    with pytest.raises(ValueError, match="gauss_hermite"):
        vi.fbgvi(lp, 0.1, expectation="gauss_hermite", num_points=5, dim=10)
    with pytest.raises(ValueError, match="cov must be symmetric positive definite"):
        vi.Gaussian.from_cov(np.zeros(2), [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="cov must have shape"):
        vi.Gaussian.from_cov(np.zeros(2), np.eye(3))
    alg = vi.fbgvi(lp, 0.1, dim=3)
    with pytest.raises(ValueError, match="q0's covariance must be symmetric positive definite"):
        alg.init(vi.Gaussian(jnp.zeros(3), jnp.diag(jnp.array([1.0, 0.0, 1.0]))))
    # inside run, init is traced: the same check runs on the host (samplers.validation.check_traced)
    with pytest.raises(jax.errors.JaxRuntimeError,
                       match="q0's covariance must be symmetric positive definite"):
        samplers.run(jax.random.key(0), alg,
                     vi.Gaussian(jnp.zeros(3), jnp.diag(jnp.array([1.0, 0.0, 1.0]))), 2)
    with pytest.raises(ValueError, match="dimension 4, but the target has dimension 3"):
        alg.init(vi.Gaussian.standard(4))
    with pytest.raises(ValueError, match="evaluating logdensity_fn at q0 failed: q0 has dimension 4"):
        vi.fbgvi(lp, 0.1).init(vi.Gaussian.standard(4))
    with pytest.raises(TypeError, match="q0 must be a vi.Gaussian"):
        alg.init(jnp.zeros(3))
    with pytest.raises(TypeError, match="scalar"):
        vi.fbgvi(lambda x: x, 0.1).init(vi.Gaussian.standard(3))
    with pytest.raises(ValueError, match="num_steps"):
        vi.fit(jax.random.key(0), alg, vi.Gaussian.standard(3), 0)
    with pytest.raises(ValueError, match="multiple of thin"):
        vi.fit(jax.random.key(0), alg, vi.Gaussian.standard(3), 10, thin=3)
    with pytest.raises(ValueError, match="fit runs one chain .* samplers.run"):
        vi.fit(jax.random.key(0), alg, vi.Gaussian.standard(3), 10, num_chains=2)
    # inside samplers.run (init traced under vmap) the shape checks still name q0
    with pytest.raises(ValueError, match="dimension 4, but the target has dimension 3"):
        samplers.run(jax.random.key(0), alg, vi.Gaussian.standard(4), 5)
    with pytest.raises(ValueError, match="evaluating logdensity_fn at q0 failed: q0 has dimension 4"):
        samplers.run(jax.random.key(0), vi.fbgvi(lp, 0.1), vi.Gaussian.standard(4), 5)
    with pytest.raises(ValueError, match="num_draws must be an integer >= 1"):
        vi.elbo(jax.random.key(0), lp, vi.Gaussian.standard(3), 0)
    with pytest.raises(TypeError, match="optimizer"):
        vi.reparam_vi(lp, optimizer="adam")


def test_reproducible_and_jit_vmap_compatible():
    A, mu, _ = gaussian_problem()
    alg = vi.sfbgvi(quadratic_logdensity(A, mu), 0.02)
    q0 = vi.Gaussian.standard(D)
    a, ta = vi.fit(jax.random.key(5), alg, q0, 20)
    b, tb = vi.fit(jax.random.key(5), alg, q0, 20)
    c, _ = vi.fit(jax.random.key(6), alg, q0, 20)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(ta.positions.scale, tb.positions.scale)
    assert np.array_equal(ta.stats["grad_norm"], tb.stats["grad_norm"])
    assert not np.array_equal(a.mean, c.mean)
    # step is pure: vmap over keys equals a sequential map; differentiable in the step size
    state = alg.init(q0)
    keys = jax.random.split(jax.random.key(0), 3)

    @jax.jit
    def check(keys, state):
        batched = jax.vmap(alg.step, in_axes=(0, None))(keys, state)[0].position.mean
        looped = jax.lax.map(lambda k: alg.step(k, state)[0].position.mean, keys)
        grad = jax.grad(lambda h: jnp.sum(alg.kernel(
            keys[0], state, None, alg.params._replace(step_size=h))[0].position.cov))(0.02)
        return batched, looped, grad

    batched, looped, grad = check(keys, state)
    # batched matmuls may sum in another order: float32 rounding, a few eps of |mean| ~ 1
    np.testing.assert_allclose(batched, looped, atol=1e-6)
    assert np.isfinite(grad)


def test_covariance_stays_spd_for_10000_float32_stochastic_steps():
    """Method note G8: stochastic FB-GVI on Bayesian logistic regression (N(0, I) prior,
    n = 200, d = 5), per-sample exact Hessians, h = 1/beta, Sigma_0 = (alpha beta)^{-1/2} I:
    beta I >= hess V >= alpha I pointwise (alpha = 1 from the prior, beta = lambda_max(X^T X)/4 + 1),
    so every Sigma_k stays in [1/beta, 1/alpha] and, after every backward step, >= h."""
    rng = np.random.default_rng(8)
    n, d = 200, 5
    X = rng.standard_normal((n, d))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ rng.standard_normal(d)))).astype(np.float32)
    beta = np.linalg.eigvalsh(X.T @ X).max() / 4 + 1.0
    Xj, yj = jnp.asarray(X, jnp.float32), jnp.asarray(y)

    def lp(w):
        eta = Xj @ w
        return jnp.sum(yj * eta - jnp.logaddexp(0.0, eta)) - 0.5 * w @ w

    h = 1.0 / beta
    q0 = vi.Gaussian(jnp.zeros(d), (beta ** -0.25) * jnp.eye(d))
    _, tr = vi.fit(jax.random.key(0), vi.sfbgvi(lp, h), q0, 10_000, on_nonfinite="raise")
    assert tr.nonfinite_step[0] == -1
    # the backward step's eigenvalues are ((sqrt(s) + sqrt(s + 4h)) / 2)^2 >= h, computed in
    # float32: relative rounding of a few eps (1.2e-7) per eigenvalue
    assert float(tr.stats["min_eigenvalue"].min()) >= h * (1 - 1e-5)
    cov = np.asarray(tr.positions.cov[0])
    eig = np.linalg.eigvalsh(cov.astype(np.float64))
    assert eig.min() >= h * (1 - 1e-5) and eig.max() <= 1.0 * (1 + 1e-5)
    np.testing.assert_array_equal(cov, np.swapaxes(cov, 1, 2))


def test_numpyro_model_through_the_bridge_recovers_a_conjugate_posterior():
    """A NumPyro model with two sites (a: scalar, b: (2,)), Gaussian prior and likelihood:
    the posterior is Gaussian, so FB-GVI (Gauss-Hermite, exact here) lands on it."""
    obs = np.array([0.3, -1.2, 0.8])

    def model():
        a = numpyro.sample("a", dist.Normal(0.0, 2.0))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        numpyro.sample("y", dist.Normal(jnp.stack([a, a + b[0], b[1]]), 0.5).to_event(1), obs=obs)

    logdensity_fn, z0, _ = samplers.numpyro.logdensity(model)
    flat_fn, x0, unravel = vi.ravel_logdensity(logdensity_fn, z0)
    # exact posterior of (a, b0, b1) (ravel order: a, b[0], b[1]): y = G x + noise
    G = np.array([[1.0, 0, 0], [1, 1, 0], [0, 0, 1]])
    prec = np.diag([1 / 4, 1.0, 1.0]) + G.T @ G / 0.25
    cov = np.linalg.inv(prec)
    mean = cov @ G.T @ obs / 0.25
    q, _ = vi.fit(jax.random.key(0),
                  vi.fbgvi(flat_fn, 0.05, expectation="gauss_hermite", num_points=2),
                  vi.Gaussian.standard(3), 600, thin=600)
    np.testing.assert_allclose(np.asarray(q.mean), mean, atol=1e-4)
    np.testing.assert_allclose(np.asarray(q.cov), cov, atol=1e-4)
    idata = q.to_arviz(jax.random.key(1), num_draws=10, unravel_fn=unravel)
    assert tuple(idata.posterior["b"].shape) == (1, 10, 2)


def test_minibatch_sfbgvi_mean_is_unbiased_on_linear_regression():
    """With minibatch Hessians (N/n) X_B^T X_B + I the mean recursion is
    E[m'] - mu = (I - h A)(E[m] - mu) (the batch is independent of m), so the stationary
    time-average of m is the exact posterior mean; tolerance from its MC standard error."""
    target = samplers.targets.make_linear_regression(jax.random.key(3), n=100, d=2)
    lp = vi.minibatch_logdensity(target.logprior_fn, target.loglik_fn, 100)
    prec = np.linalg.inv(np.asarray(target.cov, np.float64))
    h = 0.5 / np.linalg.eigvalsh(prec).max()
    alg = vi.sfbgvi(lp, h)
    batches = samplers.data.minibatches(target.data, 20)
    q0 = vi.Gaussian.from_cov(np.asarray(target.mean), np.asarray(target.cov))
    trace = samplers.run(jax.random.key(0), alg, q0, 3000, num_chains=4, batches=batches)
    means = np.asarray(trace.positions.mean[:, 500:])
    for i in range(2):
        est, se = mc_mean(means[:, :, i])
        assert_within(est, se, float(target.mean[i]), what=f"mean[{i}]")


def test_reparam_vi_reaches_the_gaussian_target():
    A, mu, _ = gaussian_problem()
    lp = quadratic_logdensity(A, mu)
    q0 = vi.Gaussian.standard(D)
    q, _ = vi.fit(jax.random.key(0), vi.reparam_vi(lp, optax.adam(1e-2), num_samples=16), q0,
                  1000, thin=1000)
    kl0 = q0.kl_to(mu, np.linalg.inv(A))
    kl = q.kl_to(mu, np.linalg.inv(A))
    assert kl < 1e-2 * kl0, (kl, kl0)
    # the default optimiser is optax.adam(step_size) with the step size traced: same steps
    _, given = vi.fit(jax.random.key(1), vi.reparam_vi(lp, optax.adam(1e-2), num_samples=16),
                      q0, 20)
    _, default = vi.fit(jax.random.key(1), vi.reparam_vi(lp, step_size=1e-2, num_samples=16),
                        q0, 20)
    np.testing.assert_allclose(default.positions.mean, given.positions.mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(default.positions.scale, given.positions.scale, rtol=1e-6,
                               atol=1e-7)


# ------------------------------------------------------------- the step-size rules

def test_backtracking_on_a_gaussian_takes_one_over_beta_and_reaches_the_target():
    """On N(mu, A^{-1}) every E_q[hess V] estimate is A, so the rule's cap gives h = 1/beta at
    every step (the largest h at which the target is FB-GVI's fixed point, method note
    §3.2), the descent test (V is exactly beta-smooth) never halves it, and q_k -> pi."""
    A, mu, lam = gaussian_problem()
    with jax.enable_x64(True):
        alg = vi.fbgvi(quadratic_logdensity(A, mu), "backtracking", expectation="exact_gaussian",
                       max_step_size=float("inf"))
        q, tr = vi.fit(jax.random.key(0), alg, vi.Gaussian.standard(D), 800)
        np.testing.assert_allclose(np.asarray(tr.stats["step_size"]), 1 / lam.max(), rtol=1e-12)
        assert np.all(np.asarray(tr.stats["num_backtracks"]) == 0)
        # the mean error contracts by 1 - alpha/beta = 0.95 per step: 1e-18 after 800 steps
        np.testing.assert_allclose(np.asarray(q.mean), mu, atol=1e-10)
        np.testing.assert_allclose(np.asarray(q.cov), np.linalg.inv(A), atol=1e-10)


def test_antithetic_draws_make_the_gaussian_case_exact():
    """With pairs u, -u the estimate of E_q[grad V] for quadratic V is A (m - mu) exactly
    (the term linear in u cancels) and the Hessian is A: stochastic FB-GVI with two
    antithetic draws is deterministic FB-GVI, so it converges to pi itself (no O(h) floor),
    while independent draws at the same h keep the floor h tr((2I - hA)^{-1}) / n."""
    A, mu, lam = gaussian_problem()
    with jax.enable_x64(True):
        lp = quadratic_logdensity(A, mu)
        q, _ = vi.fit(jax.random.key(0), vi.fbgvi(lp, num_samples=2, antithetic=True),
                      vi.Gaussian.standard(D), 800, thin=800)
        np.testing.assert_allclose(np.asarray(q.mean), mu, atol=1e-10)
        np.testing.assert_allclose(np.asarray(q.cov), np.linalg.inv(A), atol=1e-10)


def test_backtracking_accepts_exactly_the_steps_that_pass_the_descent_test():
    """V(x) = e^x + x^2/2 in 1-d, expectations at the mean, start at m_0 = -5 (curvature
    about 1 there, e^x steepens along the first move): recomputed in numpy, each accepted
    step satisfies V(m+) <= V(m) + V'(m)(m+ - m) + (m+ - m)^2/(2h), and when the step was
    halved, twice the accepted h violates it; the run reaches the fixed point of
    expectations-at-the-mean, V'(m) = e^m + m = 0: m = -W(1) = -0.5671432904 (Lambert W),
    Sigma = 1/V''(m) = 1/(1 - m)."""
    V = lambda x: np.exp(x) + x**2 / 2  # noqa: E731
    dV = lambda x: np.exp(x) + x  # noqa: E731
    with jax.enable_x64(True):
        lp = lambda x: -(jnp.exp(x[0]) + x[0] ** 2 / 2)  # noqa: E731
        alg = vi.fbgvi(lp, expectation="exact_gaussian", max_step_size=float("inf"))
        q0 = vi.Gaussian(jnp.array([-5.0]), jnp.eye(1))
        q, tr = vi.fit(jax.random.key(0), alg, q0, 200)
    m = np.concatenate([[-5.0], np.asarray(tr.positions.mean)[0, :, 0]])
    h = np.asarray(tr.stats["step_size"])[0]
    nb = np.asarray(tr.stats["num_backtracks"])[0]
    assert nb[0] > 0  # the test fired on the first step

    def excess(m0, hh):  # the mean part of the candidate does not depend on the covariance
        m1 = m0 - hh * dV(m0)
        return V(m1) - V(m0) - dV(m0) * (m1 - m0) - (m1 - m0) ** 2 / (2 * hh)

    for k in range(len(h)):
        assert excess(m[k], h[k]) <= 1e-12 * (1 + abs(V(m[k])))
        if nb[k] > 0:
            assert excess(m[k], 2 * h[k]) > 0
    m_star = -float(scipy.special.lambertw(1.0).real)
    np.testing.assert_allclose(np.asarray(q.mean), [m_star], atol=1e-10)
    np.testing.assert_allclose(np.asarray(q.cov), [[1 / (1 - m_star)]], atol=1e-10)


def test_step_rule_arguments_give_clear_errors():
    lp = quadratic_logdensity(np.eye(3), np.zeros(3))
    # the default rule is "backtracking": the same algorithm, equal as a value
    assert vi.fbgvi(lp) == vi.fbgvi(lp, "backtracking") and vi.fbgvi(lp).step_size is None
    assert vi.fbgvi(lp, "curvature") != vi.fbgvi(lp) and vi.fbgvi(lp, "curvature").params is None
    assert vi.fbgvi(lp, 0.1).step_size == pytest.approx(0.1)  # fixed: a traced parameter
    with pytest.raises(TypeError, match="step_size must be a positive number or one of "
                                        "'backtracking', 'curvature', got 'armijo'"):
        vi.fbgvi(lp, "armijo")
    with pytest.raises(TypeError, match="step_size must be a positive number for BW-GD"):
        vi.bwgd(lp, "backtracking")
    with pytest.raises(ValueError, match="antithetic=True .* even num_samples"):
        vi.sfbgvi(lp, 0.1, antithetic=True)
    with pytest.raises(ValueError, match="antithetic=True .* expectation='monte_carlo'"):
        vi.fbgvi(lp, 0.1, expectation="gauss_hermite", antithetic=True)
    with pytest.raises(ValueError, match="max_step_size bounds the 'backtracking' rule only"):
        vi.fbgvi(lp, 0.1, max_step_size=1.0)
    with pytest.raises(ValueError, match="max_step_size must be a finite number > 0"):
        vi.fbgvi(lp, max_step_size=0.0)
    with pytest.raises(ValueError, match="step_size='backtracking' .* callable expectation"):
        vi.fbgvi(lp, expectation=lambda key, q: (q.mean, jnp.eye(3)))
    with pytest.raises(TypeError, match="antithetic must be True or False"):
        vi.fbgvi(lp, antithetic=1)


# ------------------------------------------------------------ one driver: samplers.run

def test_samplers_run_drives_fbgvi_and_exports_the_gaussian_to_arviz():
    """Issue 18: ``samplers.run(key, vi.fbgvi(...), q0, num_steps=200)`` is a Trace whose
    positions are the Gaussians (mean (d,), scale (d, d)) after each kept step; on
    N(mu, A^{-1}) with exact expectations and h = 0.5/beta, the last one is the target."""
    A, mu, lam = gaussian_problem(d=3, kappa=4.0)
    alg = vi.fbgvi(quadratic_logdensity(A, mu), step_size=0.5 / lam.max(),
                   expectation="exact_gaussian")
    trace = samplers.run(jax.random.key(0), alg, vi.Gaussian.standard(3), num_steps=200,
                         thin=4, num_chains=2)
    assert isinstance(trace, samplers.Trace) and isinstance(trace.positions, vi.Gaussian)
    assert trace.positions.mean.shape == (2, 50, 3) and trace.positions.scale.shape == (2, 50, 3, 3)
    # the error contracts by (1 - alpha h)^2 = 0.766 per step: 1e-23 after 200, float32 left
    np.testing.assert_allclose(trace.positions.cov[:, -1], np.broadcast_to(np.linalg.inv(A),
                                                                           (2, 3, 3)), atol=1e-5)
    np.testing.assert_allclose(trace.stats["step_size"], 0.5 / lam.max(), rtol=1e-6)
    idata = trace.to_arviz()
    assert tuple(idata.posterior["mean"].shape) == (2, 50, 3)
    assert tuple(idata.posterior["scale"].shape) == (2, 50, 3, 3)
    for name in ("step_size", "min_eigenvalue", "grad_norm", "num_backtracks", "diverging"):
        assert tuple(idata.sample_stats[name].shape) == (2, 50), name
    np.testing.assert_array_equal(idata.posterior["mean"].values, trace.positions.mean)


def test_fbgvi_checkpoint_resume_is_bit_identical(tmp_path, monkeypatch):
    """As for MALA (tests/test_run.py): a run cut by a crash mid-write resumes from its last
    good checkpoint and gives the uninterrupted run's Gaussians and statistics bit for bit
    (Monte Carlo expectations, the backtracking rule's running h in the state)."""
    from checkpointing import crash_on_save

    run_module = importlib.import_module("samplers.run")
    A, mu, _ = gaussian_problem(d=2, kappa=4.0)
    alg = vi.fbgvi(quadratic_logdensity(A, mu), num_samples=2)
    q0 = vi.Gaussian.standard(2)
    path = str(tmp_path / "vi.npz")

    def run(**kw):
        return samplers.run(jax.random.key(3), alg, q0, 60, thin=2, num_chains=2, **kw)

    reference = run()
    saves = crash_on_save(monkeypatch, run_module, path, 4)
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=path, checkpoint_every=10)
    monkeypatch.undo()
    assert saves == [0, 5, 10, 15]
    resumed = run(checkpoint=path, checkpoint_every=10)
    for a, b in ((resumed.positions, reference.positions), (resumed.stats, reference.stats),
                 (resumed.final_state, reference.final_state)):
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_a_diverging_vi_run_is_reported_with_its_step_or_flagged():
    """FB-GVI with h = 1 on N(0, 1/100) (h beta = 100, far above 1): the mean is multiplied
    by 1 - h lambda = -99 every step and the covariance grows too, until float32 overflows.
    ``on_nonfinite="raise"`` names the first non-finite step; ``"flag"`` returns the run with
    that step in ``nonfinite_step`` and the draws from it on marked diverging."""
    lp = lambda x: -50.0 * jnp.sum(x ** 2)  # noqa: E731
    alg = vi.fbgvi(lp, 1.0, expectation="exact_gaussian")
    q0 = vi.Gaussian(jnp.ones(1), jnp.eye(1))
    with pytest.raises(samplers.NonFiniteError, match=r"chain 0 turned non-finite \(NaN or inf\) "
                                                      r"at step (\d+)") as err:
        samplers.run(jax.random.key(0), alg, q0, 40)
    flagged = samplers.run(jax.random.key(0), alg, q0, 40, on_nonfinite="flag")
    step = int(flagged.nonfinite_step[0])
    assert f"at step {step};" in str(err.value)
    finite = np.isfinite(flagged.positions.mean[0, :, 0]) & np.all(
        np.isfinite(flagged.positions.scale[0]), axis=(1, 2))
    # the step reported is the first non-finite Gaussian (step t is draw t: thin = 1)
    assert finite[:step].all() and not finite[step]
    # |m_k| = 99^k is still finite in float32 (max 3.4e38) up to k = 19, so the covariance
    # (which grows faster) is what overflowed first, at or before step index 19
    assert 0 < step <= 19
    diverging = np.asarray(flagged.stats["diverging"][0])
    assert diverging[step:].all() and not diverging[:step].any()
    with pytest.warns(RuntimeWarning, match=r"chains \[0\] turned non-finite"):
        flagged.to_arviz()


def test_a_new_step_size_reuses_the_compiled_run():
    """The fixed step size is a traced parameter (``algorithm.params``), as for MALA: an
    FB-GVI rebuilt with another step size runs on the program already compiled."""
    run_module = importlib.import_module("samplers.run")
    lp = quadratic_logdensity(np.eye(2), np.zeros(2))
    q0 = vi.Gaussian.standard(2)
    samplers.run(jax.random.key(0), vi.sfbgvi(lp, 0.1), q0, 10)
    before = run_module._whole._cache_size()
    trace = samplers.run(jax.random.key(0), vi.sfbgvi(lp, 0.2), q0, 10)
    assert run_module._whole._cache_size() == before
    np.testing.assert_allclose(trace.stats["step_size"], 0.2)
    np.testing.assert_allclose(trace.params.step_size, [0.2])


def test_kl_w2_and_elbo_over_a_trace():
    """Per Gaussian of a batch (leading axes, as in a trace's positions): KL and W2^2 to a
    reference against closed forms computed here, and the ELBO: E_q[log p] + H(q) =
    log Z - KL(q || pi) for every q, so ELBO + KL must be log Z of the unnormalised Gaussian
    target, up to the Monte Carlo standard error of the E_q[log p] estimate."""
    A, mu, _ = gaussian_problem(d=2, kappa=3.0)
    cov_t = np.linalg.inv(A)
    q = vi.Gaussian(jnp.asarray([[0.0, 0.0], [0.5, 1.0]], jnp.float32),
                    jnp.asarray([np.eye(2), np.diag([0.5, 2.0])], jnp.float32))
    kl, w2 = q.kl_to(mu, cov_t), q.w2_squared_to(mu, cov_t)
    assert kl.shape == (2,) and w2.shape == (2,)
    for i in range(2):
        m, S = np.asarray(q.mean[i], np.float64), np.asarray(q.cov[i], np.float64)
        expected_kl = 0.5 * (np.trace(A @ S) + (mu - m) @ A @ (mu - m) - 2
                             + np.log(np.linalg.det(cov_t) / np.linalg.det(S)))
        np.testing.assert_allclose(kl[i], expected_kl, rtol=1e-6)
        np.testing.assert_allclose(w2[i], _bures_sq(S, cov_t) + np.sum((m - mu) ** 2), rtol=1e-6)
    lp = quadratic_logdensity(A, mu)  # unnormalised: log Z = log det(2 pi A^{-1}) / 2
    log_z = 0.5 * np.log(np.linalg.det(2 * np.pi * cov_t))
    n = 20_000
    values = np.asarray(vi.elbo(jax.random.key(0), lp, q, num_draws=n), np.float64)
    # the estimate's standard error: sd of log p under q over sqrt(n), sd computed here
    for i in range(2):
        x = np.asarray(vi.Gaussian(q.mean[i], q.scale[i]).sample(jax.random.key(i + 1), n),
                       np.float64)
        sd = np.std(-0.5 * np.einsum("ni,ij,nj->n", x - mu, A, x - mu))
        assert_within(values[i] + kl[i], sd / np.sqrt(n), log_z, what=f"ELBO + KL, q[{i}]")

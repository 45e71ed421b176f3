"""Bad input gets a clear error from the library, never a crash deep inside JAX (issue 15).

One test per case that used to give a raw JAX error or silent garbage:

* a position of the wrong shape for the log-density (ULA, MALA, SVGD): ValueError naming
  ``initial_position`` and the shape given, raised on shapes alone before compiling;
* integer (or boolean) positions, particles and Gaussians: the rule is to convert them to
  the default float dtype where they enter (``init``); the run equals the float run;
* a log-density that returns a vector (SVGD, also under ``samplers.run``): TypeError;
* a NaN row in ``x_T`` (diffusion): ValueError naming ``x_T`` and the rows;
* ``diffusion.sample(dim=(4, 4))``: TypeError naming ``dim`` and pointing to ``shape=``;
* FB-GVI with a step that is too large: ``samplers.run``'s NonFiniteError (or, flagged, a
  Gaussian that refuses to be exported to ArviZ), and the default ``step_size=None`` on a 10-group hierarchical
  logistic regression, where the documented step 0.05 diverged at step 3.

"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import diffusion
import samplers
import vi

KEY = jax.random.key(0)
FLOAT = jnp.result_type(float)
PRECISION = jnp.diag(jnp.arange(1.0, 4.0))  # a 3-dimensional Gaussian target


def logdensity_3d(x):
    return -0.5 * x @ PRECISION @ x


def _run(algorithm, position, num_steps=5, **kwargs):
    return samplers.run(key=KEY, algorithm=algorithm, initial_position=position,
                        num_steps=num_steps, **kwargs)


# ------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("factory", [samplers.ula, samplers.mala])
def test_langevin_position_of_the_wrong_shape_is_a_value_error_naming_it(factory):
    alg = factory(logdensity_3d, 0.1)
    for call in (lambda: _run(alg, jnp.zeros(2)), lambda: alg.init(jnp.zeros(2))):
        with pytest.raises(ValueError, match=r"evaluating logdensity_fn at initial_position "
                                             r"failed: initial_position has shape \(2,\)") as err:
            call()
        assert "dot_general" in str(err.value)  # JAX's reason, on one line, as the cause
        assert isinstance(err.value.__cause__, TypeError)


def test_pytree_position_of_the_wrong_shape_names_each_leaf():
    alg = samplers.ula(lambda p: logdensity_3d(p["a"]) - p["b"] ** 2, 0.1)
    with pytest.raises(ValueError, match=r"initial_position has shape \{\['a'\]: \(2,\), "
                                         r"\['b'\]: \(\)\}"):
        _run(alg, {"a": jnp.zeros(2), "b": jnp.zeros(())})


def test_svgd_particles_of_the_wrong_shape_is_a_value_error_naming_them():
    alg = samplers.stein.svgd(logdensity_3d, step_size=0.1)
    with pytest.raises(ValueError, match=r"failed: one particle of initial_position has "
                                         r"shape \(2,\)"):
        _run(alg, jnp.zeros((5, 2)))


def test_fbgvi_start_of_the_wrong_dimension_names_q0_and_the_expected_shape():
    with pytest.raises(ValueError, match=r"evaluating logdensity_fn at q0 failed: q0 has "
                                         r"dimension 2"):
        vi.fit(KEY, vi.fbgvi(logdensity_3d, 0.1), vi.Gaussian.standard(2), 5)


def test_vector_valued_logdensity_is_a_type_error_under_run_and_at_init():
    alg = samplers.stein.svgd(lambda x: -x ** 2, step_size=0.1)
    particles = jax.random.normal(KEY, (5, 3))
    for call in (lambda: _run(alg, particles), lambda: alg.init(particles)):
        with pytest.raises(TypeError, match=r"logdensity_fn must return a scalar log-density, "
                                            r"got an array of shape \(3,\)"):
            call()
    with pytest.raises(TypeError, match=r"logdensity_fn must return a scalar"):
        _run(samplers.mala(lambda x: -x ** 2, 0.1), jnp.zeros(3))


# ---------------------------------------------------------------- integers: converted

@pytest.mark.parametrize("factory", [samplers.ula, samplers.mala])
def test_langevin_integer_position_is_converted_to_float(factory):
    alg = factory(logdensity_3d, 0.1)
    from_int = _run(alg, jnp.array([1, 0, -1]), num_steps=20)
    from_float = _run(alg, jnp.array([1.0, 0.0, -1.0]), num_steps=20)
    assert from_int.positions.dtype == FLOAT
    np.testing.assert_array_equal(from_int.positions, from_float.positions)
    assert alg.init(jnp.array([True, False, True])).position.dtype == FLOAT


def test_svgd_integer_particles_are_converted_to_float():
    alg = samplers.stein.svgd(logdensity_3d, step_size=0.05)
    particles = np.arange(15).reshape(5, 3) - 7
    from_int = _run(alg, particles, num_steps=10)
    from_float = _run(alg, particles.astype(np.float32), num_steps=10)
    assert from_int.positions.dtype == FLOAT
    np.testing.assert_array_equal(from_int.positions, from_float.positions)


def test_fbgvi_integer_start_is_converted_to_float():
    alg = vi.fbgvi(logdensity_3d, 0.1)
    q_int, _ = vi.fit(KEY, alg, vi.Gaussian(jnp.zeros(3, int), jnp.eye(3, dtype=int)), 20)
    q_float, _ = vi.fit(KEY, alg, vi.Gaussian.standard(3), 20)
    assert q_int.mean.dtype == FLOAT and q_int.scale.dtype == FLOAT
    np.testing.assert_array_equal(q_int.mean, q_float.mean)
    np.testing.assert_array_equal(q_int.scale, q_float.scale)


# --------------------------------------------------------------------------- diffusion

SDE = diffusion.VPSDE()
SCORE = diffusion.scores.gaussian(SDE, np.zeros(2), np.eye(2))


def test_nonfinite_rows_of_x_t_are_refused_naming_the_rows():
    x_T = np.zeros((5, 2))
    x_T[1, 0] = np.nan
    x_T[3, 1] = np.inf
    message = r"x_T must be finite, got NaN or infinite entries in 2 of its 5 rows \(rows 1, 3\)"
    with pytest.raises(ValueError, match=message):
        diffusion.solve_ode(x_T=x_T, sde=SDE, score=SCORE)
    with pytest.raises(ValueError, match=message):
        diffusion.solve_sde(key=KEY, x_T=x_T, sde=SDE, score=SCORE)


def test_integer_x_t_is_converted_to_float():
    x_int = np.array([[1, -1], [0, 2]])
    out = diffusion.solve_ode(x_T=x_int, sde=SDE, score=SCORE, num_steps=5)
    assert out.dtype == FLOAT
    np.testing.assert_array_equal(
        out, diffusion.solve_ode(x_T=x_int.astype(np.float32), sde=SDE, score=SCORE, num_steps=5))


def test_sample_with_an_image_shaped_dim_is_a_type_error_naming_dim():
    with pytest.raises(TypeError, match=r"dim must be an int .*for image-shaped events pass "
                                        r"shape=, got dim=\(4, 4\)"):
        diffusion.sample(KEY, SDE, SCORE, 4, dim=(4, 4))
    with pytest.raises(ValueError, match=r"dim must be an integer >= 1"):
        diffusion.sample(KEY, SDE, SCORE, 4, dim=0)


# ----------------------------------------------- FB-GVI: divergence and the default step

def hierarchical_logistic_regression(seed=0, num_groups=10, num_covariates=3, n=200):
    """A 10-group hierarchical logistic regression in NumPyro: intercepts a_g ~ N(mu, tau),
    tau ~ HalfCauchy(1), 3 covariates with N(0, 1) slopes, 200 synthetic Bernoulli draws.
    Returns the flat log-density over the 15 unconstrained parameters."""
    def model(X, group, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(1.0))
        with numpyro.plate("groups", num_groups):
            a = numpyro.sample("a", dist.Normal(mu, tau))
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([num_covariates]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=a[group] + X @ beta), obs=y)

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, num_covariates)).astype(np.float32)
    group = rng.integers(0, num_groups, n)
    a_true = 0.5 + 0.8 * rng.standard_normal(num_groups)
    logits = a_true[group] + X @ np.array([1.0, -0.5, 0.25])
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    logdensity_fn, z0, _ = samplers.numpyro.logdensity(model, X, group, y)
    flat_fn, x0, _ = vi.ravel_logdensity(logdensity_fn, z0)
    return flat_fn, x0.size


@pytest.fixture(scope="module")
def hierarchical():
    return hierarchical_logistic_regression()


def _elbo(logdensity_fn, q, key, num_draws=4000):
    """ELBO estimate E_q[log p] + H(q) from fresh draws, and its standard error."""
    logp = np.asarray(jax.vmap(logdensity_fn)(q.sample(key, num_draws)), np.float64)
    return logp.mean() + float(q.entropy()), logp.std() / np.sqrt(num_draws)


def test_fbgvi_step_too_large_raises_and_a_flagged_result_refuses_export(hierarchical):
    flat_fn, d = hierarchical
    q0 = vi.Gaussian.standard(d)
    alg = vi.fbgvi(flat_fn, 0.05)  # the step the docs used to show: diverged at step 3
    with pytest.raises(samplers.NonFiniteError, match=r"chain 0 turned non-finite "
                                                      r"\(NaN or inf\) at step \d+") as err:
        vi.fit(KEY, alg, q0, 20)
    assert err.value.trace.nonfinite_step[0] > 0
    q, trace = vi.fit(KEY, alg, q0, 20, on_nonfinite="flag")
    assert trace.nonfinite_step[0] > 0
    with pytest.warns(RuntimeWarning, match="non-finite"):
        trace.to_arviz()
    with pytest.raises(ValueError, match="cannot export a non-finite Gaussian to ArviZ"):
        q.to_arviz(KEY)
    with pytest.raises(ValueError, match="on_nonfinite must be 'raise' or 'flag'"):
        vi.fit(KEY, alg, q0, 20, on_nonfinite="nan")


def test_fbgvi_default_step_stays_finite_and_improves_the_elbo_on_a_hierarchical_model(
        hierarchical):
    flat_fn, d = hierarchical
    q0 = vi.Gaussian.standard(d)
    # the default step: h_0 = 1 / ||hess log p(m_0)||_2, computed here in float64 numpy
    H = np.asarray(jax.hessian(flat_fn)(q0.mean), np.float64)
    h0 = 1.0 / np.abs(np.linalg.eigvalsh(0.5 * (H + H.T))).max()
    num_steps = 1000  # as in docs/vi.md's NumPyro example
    q, trace = vi.fit(KEY, vi.fbgvi(flat_fn), q0, num_steps, thin=100)
    assert trace.nonfinite_step[0] == -1
    assert np.all(np.isfinite(trace.positions.mean)) and np.all(np.isfinite(trace.positions.scale))
    # the library computes L_0 in float32: eigvalsh's relative error on the largest
    # eigenvalue is O(d eps32) ~ 1e-6 here, so 1e-4 is round-off with margin, not tuning
    h0_chosen = float(trace.final_state.step_size[0])
    np.testing.assert_allclose(h0_chosen, h0, rtol=1e-4)
    # every step satisfies h_k <= h_0 (the per-step cap only lowers it)
    assert np.all(np.asarray(trace.stats["step_size"]) <= h0_chosen * (1 + 1e-6))
    before, se_before = _elbo(flat_fn, q0, jax.random.key(1))
    after, se_after = _elbo(flat_fn, q, jax.random.key(2))
    assert after - before > 5.0 * np.hypot(se_before, se_after), (before, after)
    q.to_arviz(KEY, num_draws=10)  # a finite result exports
    # the stochastic version, one draw per step, stays finite too
    _, strace = vi.fit(KEY, vi.sfbgvi(flat_fn), q0, 500, thin=100)
    assert strace.nonfinite_step[0] == -1


def test_fbgvi_default_step_on_a_gaussian_is_one_over_beta_and_converges_exactly():
    # N(mu, A^{-1}) with precision eigenvalues 1..3 (beta = 3): h = 1/beta, where FB-GVI's
    # fixed point is the target itself ([DBCS23]; exact iff h beta <= 1)
    mu = jnp.array([1.0, -1.0, 0.5])
    lp = lambda x: logdensity_3d(x - mu)  # noqa: E731
    alg = vi.fbgvi(lp, expectation="exact_gaussian")
    assert alg.step_size is None
    state = alg.init(vi.Gaussian.standard(3))
    # 1 / (the largest eigenvalue of diag(1, 2, 3)) in float32: a few eps32 = 1.2e-7
    assert float(state.step_size) == pytest.approx(1.0 / 3.0, rel=1e-6)
    q, trace = vi.fit(KEY, alg, vi.Gaussian.standard(3), 300)
    assert float(trace.final_state.step_size[0]) == pytest.approx(1.0 / 3.0, rel=1e-6)
    # W2^2 contracts by (1 - alpha h)^2 = (2/3)^2 per step ([DBCS23] Thm 3.2): after 300
    # steps only float32 round-off of O(1) entries remains; 1e-5 is about 80 eps32
    np.testing.assert_allclose(q.mean, mu, atol=1e-5)
    np.testing.assert_allclose(q.cov, np.diag(1.0 / np.arange(1.0, 4.0)), atol=1e-5)


def test_default_step_needs_a_full_logdensity_and_finite_curvature():
    lp = vi.minibatch_logdensity(lambda x: -0.5 * x @ x,
                                 lambda x, datum: -0.5 * (x @ datum) ** 2, 10)
    with pytest.raises(ValueError, match="step_size=None chooses the step .* pass step_size"):
        vi.sfbgvi(lp)
    with pytest.raises(ValueError, match="step_size=None chooses h .* pass step_size"):
        vi.fbgvi(lambda x: jnp.sum(x)).init(vi.Gaussian.standard(2))  # zero curvature
    with pytest.raises(TypeError, match="step_size"):
        vi.bwgd(logdensity_3d, None)  # BW-GD has no default step


def test_nonfinite_gaussian_refuses_export():
    q = vi.Gaussian(jnp.array([0.0, jnp.nan]), jnp.eye(2))
    with pytest.raises(ValueError, match="cannot export a non-finite Gaussian"):
        q.to_arviz(KEY)

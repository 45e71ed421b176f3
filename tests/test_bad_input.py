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
from mc import se_mean

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
    return logp.mean() + float(q.entropy()), se_mean(logp, ddof=0)


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
    with pytest.raises(ValueError, match="on_nonfinite must be one of raise, flag"):
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
    # fixed point is the target itself ([Diao2023]; exact iff h beta <= 1)
    mu = jnp.array([1.0, -1.0, 0.5])
    lp = lambda x: logdensity_3d(x - mu)  # noqa: E731
    alg = vi.fbgvi(lp, expectation="exact_gaussian")
    assert alg.step_size is None
    state = alg.init(vi.Gaussian.standard(3))
    # 1 / (the largest eigenvalue of diag(1, 2, 3)) in float32: a few eps32 = 1.2e-7
    assert float(state.step_size) == pytest.approx(1.0 / 3.0, rel=1e-6)
    q, trace = vi.fit(KEY, alg, vi.Gaussian.standard(3), 300)
    assert float(trace.final_state.step_size[0]) == pytest.approx(1.0 / 3.0, rel=1e-6)
    # W2^2 contracts by (1 - alpha h)^2 = (2/3)^2 per step ([Diao2023, Thm 3.2]): after 300
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
    with pytest.raises(jax.errors.JaxRuntimeError, match="step_size=None chooses h .* pass"):
        vi.fit(KEY, vi.fbgvi(lambda x: jnp.sum(x)), vi.Gaussian.standard(2), 3)  # traced init
    with pytest.raises(TypeError, match="step_size"):
        vi.bwgd(logdensity_3d, None)  # BW-GD has no default step


def test_nonfinite_gaussian_refuses_export():
    q = vi.Gaussian(jnp.array([0.0, jnp.nan]), jnp.eye(2))
    with pytest.raises(ValueError, match="cannot export a non-finite Gaussian"):
        q.to_arviz(KEY)


# ------------------------------------------------------------------ one rule for counts
# Every count of the three packages goes through samplers.validation.check_int: a value that
# is not an integer (a float, even 10.0, or a bool) is a TypeError, an integer below the
# minimum a ValueError, and both messages name the argument and the value given.

_SSM = samplers.smc.LinearGaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
_YS = jnp.ones((4, 1))
_CLIENTS = [lambda x: -jnp.sum(x ** 2)] * 2
_X_T = jnp.zeros((3, 2))
_ULA = samplers.ula(logdensity_3d, 0.1)

COUNTS = {  # name: (call with the count, smallest valid value)
    "run/num_steps": (lambda v: samplers.run(KEY, _ULA, jnp.zeros(3), v), 1),
    "run/num_chains": (lambda v: samplers.run(KEY, _ULA, jnp.zeros(3), 2, num_chains=v), 1),
    "run/num_warmup": (lambda v: samplers.run(KEY, _ULA, jnp.zeros(3), 2, num_warmup=v), 0),
    "run/thin": (lambda v: samplers.run(KEY, _ULA, jnp.zeros(3), 2, thin=v), 1),
    "malt/num_integration_steps": (
        lambda v: samplers.malt(logdensity_3d, 0.1, num_integration_steps=v), 1),
    "minibatch_gradient/data_size": (
        lambda v: samplers.minibatch_gradient(logdensity_3d, lambda x, d: 0.0, v), 1),
    "minibatches/batch_size": (lambda v: samplers.data.minibatches(jnp.zeros((4, 2)), v), 1),
    "fald/local_steps": (lambda v: samplers.fald(_CLIENTS, v, 0.1), 1),
    "scheme_i/num_reporting": (lambda v: samplers.federated.scheme_i(v), 1),
    "make_linear_regression/n": (
        lambda v: samplers.targets.make_linear_regression(KEY, v, 2), 1),
    "funnel/d": (lambda v: samplers.targets.funnel(v), 2),
    "svgd/block_size": (lambda v: samplers.stein.svgd(logdensity_3d, step_size=0.1,
                                                      block_size=v), 1),
    "rbf/median_points": (lambda v: samplers.stein.kernels.rbf(median_points=v), 2),
    "svmd/max_particles": (lambda v: samplers.stein.svmd(
        logdensity_3d, samplers.stein.mirror.identity(), step_size=0.1, max_particles=v), 2),
    "simulate/num_steps": (lambda v: samplers.smc.simulate(KEY, _SSM, v), 1),
    "particle_filter/num_particles": (
        lambda v: samplers.smc.particle_filter(KEY, _SSM, _YS, v), 2),
    "paris/num_backward": (lambda v: samplers.smc.paris(
        KEY, _SSM, _YS, lambda t, x, x1: x, 4, num_backward=v), 1),
    "ppg/burn_in": (lambda v: samplers.smc.ppg(_SSM, _YS, lambda t, x, x1: x, 4, burn_in=v), 0),
    "fit/num_iterations": (lambda v: samplers.smc.fit(
        KEY, lambda p: _SSM, _YS, {}, num_iterations=v), 1),
    "solve_ode/num_steps": (lambda v: diffusion.solve_ode(_X_T, SDE, SCORE, num_steps=v), 1),
    "sample/num_samples": (lambda v: diffusion.sample(KEY, SDE, SCORE, v, dim=2), 1),
    "sample/batch_size": (lambda v: diffusion.sample(KEY, SDE, SCORE, 4, dim=2,
                                                     batch_size=v), 1),
    "sample/dim": (lambda v: diffusion.sample(KEY, SDE, SCORE, 4, dim=v), 1),
    "DiscreteVPSDE.from_schedule/num_timesteps": (
        lambda v: diffusion.DiscreteVPSDE.from_schedule("linear", v), 2),
}


@pytest.mark.parametrize("entry", sorted(COUNTS))
@pytest.mark.parametrize("value", [2.5, 10.0, True, "3"])
def test_a_count_that_is_not_an_integer_is_a_type_error_naming_it(entry, value):
    call, _ = COUNTS[entry]
    name = entry.split("/")[1]
    with pytest.raises(TypeError, match=rf"{name} must be an integer .*, got {value!r}"):
        call(value)


@pytest.mark.parametrize("entry", sorted(COUNTS))
def test_a_count_below_its_minimum_is_a_value_error_naming_it(entry):
    call, minimum = COUNTS[entry]
    name = entry.split("/")[1]
    with pytest.raises(ValueError, match=rf"{name} must be an integer (>= {minimum}|in "
                                         rf"\[{minimum}, \d+\]), got {minimum - 1}"):
        call(minimum - 1)


def test_check_int_accepts_integer_scalars_refuses_arrays_and_returns_an_int():
    from samplers.validation import check_int
    for value in (np.int32(3), np.int64(3), 3):
        out = check_int("n", value)
        assert out == 3 and type(out) is int
    for array in (np.array(3), jnp.array(3)):  # unhashable: refused before jit sees it
        with pytest.raises(TypeError, match="n must be an integer >= 1"):
            check_int("n", array)
    with pytest.raises(TypeError, match="num_chains must be an integer"):
        samplers.run(KEY, samplers.mala(lambda x: -x @ x, 0.1), jnp.zeros(2), 4,
                     num_chains=np.array(2))
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 4\], got 5"):
        check_int("n", 5, maximum=4)


# --------------------------------------------------------------- one non-finite policy

def _nan_observation_model():
    """The observation density is NaN once y > 1.5: the weights fail at that time step."""
    return samplers.smc.StateSpaceModel(
        _SSM.init_sample, _SSM.init_logpdf, _SSM.transition_sample, _SSM.transition_logpdf,
        lambda x, y: jnp.where(y[0] > 1.5, jnp.nan, -0.5 * jnp.sum((y - x) ** 2)))


def test_particle_filter_and_paris_raise_a_nonfinite_error_or_flag_the_time_step():
    model, ys = _nan_observation_model(), jnp.zeros((6, 1)).at[3].set(2.0)
    lag = lambda t, x, x1: x * x1  # noqa: E731
    calls = {"particle_filter": lambda k, **kw: samplers.smc.particle_filter(k, model, ys, 8, **kw),
             "paris": lambda k, **kw: samplers.smc.paris(k, model, ys, lag, 8, backward="exact",
                                                         **kw)}
    for name, call in calls.items():
        with pytest.raises(samplers.NonFiniteError, match=r"log-weights at time step 3 ") as err:
            call(KEY)
        assert isinstance(err.value, samplers.smc.WeightError), name
        assert int(call(KEY, on_nonfinite="flag").nonfinite_step) == 3, name
        with pytest.raises(ValueError, match="on_nonfinite must be one of raise, flag; got 'warn'"):
            call(KEY, on_nonfinite="warn")
    keys = jax.random.split(KEY, 2)  # replicates: each has its own first failing step
    with pytest.raises(samplers.smc.WeightError, match=r"time step 3 \(replicate 0\)"):
        calls["particle_filter"](keys)
    flagged = calls["particle_filter"](keys, on_nonfinite="flag")
    np.testing.assert_array_equal(flagged.nonfinite_step, [3, 3])
    healthy = samplers.smc.particle_filter(KEY, _SSM, ys, 8, on_nonfinite="flag")
    assert int(healthy.nonfinite_step) == -1


def test_fit_raises_a_nonfinite_error_with_the_history_or_flags_the_iteration():
    # log q is finite (0), its gradient in a is NaN: jnp.where's untaken branch sqrt(a - 10)
    def family(p):
        kink = lambda x, x1: jnp.where(p["a"] > 10.0, jnp.sqrt(p["a"] - 10.0), 0.0)  # noqa: E731
        return samplers.smc.StateSpaceModel(
            _SSM.init_sample, _SSM.init_logpdf, _SSM.transition_sample,
            lambda x, x1: _SSM.transition_logpdf(x, x1) + kink(x, x1), _SSM.observation_logpdf)

    kwargs = dict(num_iterations=3, num_particles=4, backward="exact")
    params0 = {"a": jnp.asarray(1.0)}
    with pytest.raises(samplers.NonFiniteError, match="gradient estimate at iteration 0") as err:
        samplers.smc.fit(KEY, family, _YS, params0, **kwargs)
    assert err.value.result.nonfinite_step == 0
    assert err.value.result.params_history["a"].shape == (0,)
    flagged = samplers.smc.fit(KEY, family, _YS, params0, on_nonfinite="flag", **kwargs)
    assert flagged.nonfinite_step == 0 and flagged.params_history["a"].shape == (3,)


# --------------------------------------------------------- value checks under jit

def test_stein_domain_check_fires_inside_run_and_under_jit_and_can_be_turned_off():
    """Inside samplers.run (and jax.jit) init is traced; the check on the particles' values
    still runs, on the host, and names the particle outside the simplex."""
    t = samplers.targets.dirichlet(jnp.array([2.0, 3.0, 4.0]))
    bad = jnp.array([[0.2, 0.3], [0.7, 0.4], [0.1, 0.1]])  # particle 1 sums to 1.1
    alg = samplers.stein.msvgd(t.logdensity_fn, samplers.stein.mirror.simplex_entropic(),
                               step_size=0.1)
    message = r"ValueError: position: particle 1 = .* lies outside the open simplex"
    with pytest.raises(ValueError, match=message.removeprefix("ValueError: ")):
        alg.init(bad)  # concrete: the ValueError itself
    with pytest.raises(jax.errors.JaxRuntimeError, match=message):
        jax.block_until_ready(jax.jit(alg.init)(bad))
    with pytest.raises(jax.errors.JaxRuntimeError, match=message):
        samplers.run(KEY, alg, bad, 2, progress=False)
    unchecked = samplers.stein.msvgd(t.logdensity_fn, samplers.stein.mirror.simplex_entropic(),
                                     step_size=0.1, throw=False)
    with pytest.raises(samplers.NonFiniteError, match="step 0"):  # what is left without it
        samplers.run(KEY, unchecked, bad, 2, progress=False)


def test_check_traced_runs_now_on_concrete_values_and_at_run_time_under_jit():
    from samplers.validation import check_traced

    def positive(x):
        if np.any(np.asarray(x) <= 0):
            raise ValueError(f"x must be > 0, got {np.asarray(x)!r}")

    check_traced(positive, jnp.ones(2))
    with pytest.raises(ValueError, match="x must be > 0"):
        check_traced(positive, -jnp.ones(2))

    @jax.jit
    def f(x):
        check_traced(positive, x)
        return 2 * x

    np.testing.assert_array_equal(f(jnp.ones(2)), 2 * np.ones(2))
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"ValueError: x must be > 0"):
        jax.block_until_ready(jax.vmap(f)(-jnp.ones((2, 2))))
    check_traced(positive, -jnp.ones(2), throw=False)


def test_traced_inverse_mass_matrix_is_checked_when_the_program_runs():
    build = jax.jit(lambda m: samplers.mala(logdensity_3d, 0.1, inverse_mass_matrix=m).params)
    build(jnp.ones(3))
    with pytest.raises(jax.errors.JaxRuntimeError, match="must hold finite entries > 0"):
        jax.block_until_ready(build(jnp.array([1.0, -1.0, 1.0])))

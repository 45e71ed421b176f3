"""Particle filter, PaRIS, PPG and learning against exact Kalman / RTS references.

Every Monte Carlo check compares a mean over independent replicates with a closed form, with
a tolerance of 5 standard errors computed from the replicates (tests/mc.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import samplers
from samplers import smc
from mc import Z, assert_within, se_mean


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def scalar_lg(a=0.9, q=0.5):
    return smc.LinearGaussian(jnp.float64(a), jnp.float64(q), 1.0, 1.0, 0.0, 1.0)


def lg4():
    A = 0.8 * np.eye(4) + 0.1 * np.eye(4, k=1)
    C = np.array([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, -0.5]])
    return smc.LinearGaussian(A, 0.3 * np.eye(4), C, 0.5 * np.eye(2), np.zeros(4), np.eye(4))


@pytest.fixture(scope="module")
def data1():
    with jax.enable_x64(True):
        model = scalar_lg()
        _, ys = smc.simulate(jax.random.key(0), model, 50)
        rts = smc.rts_smoother(model, ys)
        exact = float(jnp.sum(rts.cross_covs[:, 0, 0] + rts.means[:-1, 0] * rts.means[1:, 0]))
        return model, ys, rts, exact


def lag_one(t, x, x_next):
    """h~_t = x_t x_{t+1}^T (the lag-one moment)."""
    return jnp.outer(x, x_next)


def first_moment(t, x, x_next):
    return x  # sums E[x_t] over t = 0..T-2


def exact_lag_one(rts):
    return np.asarray(jnp.sum(rts.cross_covs + jnp.einsum("ti,tj->tij", rts.means[:-1],
                                                          rts.means[1:]), axis=0))


def replicate_check(values, expected, what):
    values = np.asarray(values, np.float64)
    assert_within(values.mean(axis=0), se_mean(values), expected, what=what)


# --------------------------------------------------------------------------- Kalman

def test_kalman_loglik_and_fisher_score_match_finite_differences(data1):
    """The exact references themselves: the Kalman log-likelihood against a dense Gaussian
    log-density of y (y ~ N(0, Sigma) with Sigma from the AR(1) covariance), and the RTS
    lag-one moment through Fisher's identity against jax.grad of that log-likelihood."""
    model, ys, rts, _ = data1
    T, a, q = ys.shape[0], 0.9, 0.5
    t = np.arange(T)
    cov_x = np.empty((T, T))
    var = np.empty(T)
    var[0] = 1.0
    for i in range(1, T):
        var[i] = a * a * var[i - 1] + q
    for i in range(T):
        cov_x[i, i:] = var[i] * a ** (t[i:] - i)
        cov_x[i:, i] = cov_x[i, i:]
    dense = scipy.stats.multivariate_normal(np.zeros(T), cov_x + np.eye(T)).logpdf(np.ravel(ys))
    assert float(smc.kalman_filter(model, ys).log_likelihood) == pytest.approx(dense, rel=1e-10)
    # d/da log L = E[sum_t (x_{t+1} - a x_t) x_t] / q (Fisher's identity, exact moments)
    second = rts.covs[:, 0, 0] + rts.means[:, 0] ** 2
    lag = rts.cross_covs[:, 0, 0] + rts.means[:-1, 0] * rts.means[1:, 0]
    fisher = float((jnp.sum(lag) - a * jnp.sum(second[:-1])) / q)
    grad = jax.grad(lambda a_: smc.kalman_filter(scalar_lg(a=a_), ys).log_likelihood)(0.9)
    assert float(grad) == pytest.approx(fisher, rel=1e-8)


# ---------------------------------------------------------------------- filtering

@pytest.mark.parametrize("scheme", smc.filtering.RESAMPLING)
def test_resampling_is_unbiased(scheme):
    """E[number of copies of i] = N W_i for every scheme (2,000 replicates)."""
    w = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    keys = jax.random.split(jax.random.key(1), 2000)
    idx = jax.vmap(lambda k: smc.resample(k, jnp.log(w), 7, scheme))(keys)
    counts = np.stack([(np.asarray(idx) == i).sum(axis=1) for i in range(5)], axis=1)
    replicate_check(counts, 7 * w, f"{scheme} copies")


@pytest.mark.parametrize("model_fn,T", [(scalar_lg, 50), (lg4, 30)], ids=["d1", "d4"])
def test_filter_likelihood_is_unbiased(model_fn, T):
    """E[L-hat / L] = 1 (Del Moral 2004): the mean over 300 replicates of exp(log L-hat - log L)
    within 5 standard errors of 1; N = 200 keeps Var(log L-hat) small so the ratio is tame."""
    model = model_fn()
    _, ys = smc.simulate(jax.random.key(2), model, T)
    exact = float(smc.kalman_filter(model, ys).log_likelihood)
    pf = smc.particle_filter(jax.random.split(jax.random.key(3), 300), model, ys, 200)
    replicate_check(np.exp(np.asarray(pf.log_likelihood) - exact), 1.0, "L-hat / L")
    # filtering means at t = T-1 (self-normalised: O(1/N) bias, below the error here)
    kf = smc.kalman_filter(model, ys)
    replicate_check(np.asarray(pf.filtering_means)[:, -1], np.asarray(kf.means[-1]), "E[x_T | y]")


# ------------------------------------------------------------------------- PaRIS

def test_paris_matches_rts_d1(data1):
    """sum_t E[x_t x_{t+1} | y] by PaRIS (N = 200, T = 20: the O(T/N) bias, about -0.2, is
    below the replicate error) against RTS, with accept-reject backward draws."""
    model, ys, _, _ = data1
    ys = ys[:20]
    est = smc.paris(jax.random.split(jax.random.key(4), 64), model, ys, lag_one, 200)
    replicate_check(est.estimate, exact_lag_one(smc.rts_smoother(model, ys)), "PaRIS")
    assert 1.0 <= float(np.mean(est.proposals_per_draw)) < 10.0


def test_paris_matches_rts_d4():
    """d = 4: sum_t E[x_t] and sum_t E[x_t x_{t+1}^T] (20 numbers), with an initial term."""
    model = lg4()
    _, ys = smc.simulate(jax.random.key(5), model, 20)
    rts = smc.rts_smoother(model, ys)

    def both(t, x, x_next):
        return {"mean": x_next, "lag": jnp.outer(x, x_next)}

    est = smc.paris(jax.random.split(jax.random.key(6), 48), model, ys, both, 200,
                    initial_fn=lambda x0: {"mean": x0, "lag": jnp.zeros((4, 4))})
    replicate_check(est.estimate["mean"], np.asarray(rts.means.sum(axis=0)), "sum E[x_t]")
    replicate_check(est.estimate["lag"], exact_lag_one(rts), "sum E[x_t x_t+1^T]")


def test_unbounded_transition_uses_exact_draws(data1):
    """A model without a transition bound (a user StateSpaceModel) takes the exact O(N^2)
    backward path and still matches RTS."""
    model, ys, _, _ = data1
    user = smc.StateSpaceModel(model.init_sample, model.init_logpdf, model.transition_sample,
                               model.transition_logpdf, model.observation_logpdf)
    ys = ys[:20]
    est = smc.paris(jax.random.split(jax.random.key(7), 64), user, ys, lag_one, 200)
    replicate_check(est.estimate, exact_lag_one(smc.rts_smoother(model, ys)), "exact PaRIS")
    assert float(np.max(est.proposals_per_draw)) == 0.0


def test_rejection_and_exact_backward_draws_have_the_backward_law():
    """Chi-square of 100,000 indices against Lambda(j) ∝ W_j q(x_j, x') computed here in numpy."""
    model = scalar_lg()
    rng = np.random.default_rng(0)
    x, log_w = rng.normal(size=(8, 1)), rng.normal(size=8)
    x_new = np.array([0.4])
    log_q = -0.5 * (x_new[0] - 0.9 * x[:, 0]) ** 2 / 0.5
    x, log_w = jnp.asarray(x), jnp.asarray(log_w)
    p = np.exp(log_w + log_q - np.max(log_w + log_q))
    p /= p.sum()
    rows = jnp.broadcast_to(jnp.asarray(x_new), (100_000, 1))
    for name, draw in (
            ("exact", lambda k: smc.backward_exact(k, model, x, log_w, rows, 1)),
            ("rejection", lambda k: smc.backward_rejection(k, model, x, log_w, rows, 1,
                                                           model.log_transition_bound)[0])):
        idx = np.asarray(jax.jit(draw)(jax.random.key(8)))[:, 0]
        counts = np.bincount(idx, minlength=8)
        chi2 = scipy.stats.chisquare(counts, 100_000 * p)
        assert chi2.pvalue > 1e-4, (name, counts, 100_000 * p)


# --------------------------------------------------------------------------- PPG

def test_conditional_sweep_from_exact_reference_is_unbiased(data1):
    """Exactness at stationarity [Cardoso2023]: one conditional PaRIS sweep
    whose reference is an exact smoothing draw is unbiased for any N >= 2 (here N = 4, 2,000
    replicates, T = 20)."""
    model, ys, _, _ = data1
    ys = ys[:20]
    exact = float(exact_lag_one(smc.rts_smoother(model, ys))[0, 0])

    @jax.jit
    def one(key):
        k_ref, k_sweep = jax.random.split(key)
        ref = smc.smoothing_sample(k_ref, model, ys)
        return smc.conditional_sweep(k_sweep, model, ys, ref, lag_one, num_particles=4,
                                     backward="rejection")[0]

    est = jax.vmap(one)(jax.random.split(jax.random.key(9), 2000))
    replicate_check(est[:, 0, 0], exact, "conditional sweep")


def test_ppg_burn_in_removes_the_bias_paris_keeps(data1):
    """PPG through samplers.run (N = 8, T = 50, 12 sweeps, burn-in 4, 400 chains) agrees with RTS;
    PaRIS at the same N is biased far beyond its standard error (the paper's claim)."""
    model, ys, _, exact = data1
    alg = smc.ppg(model, ys, lag_one, num_particles=8, burn_in=4)
    start = smc.initial_path(jax.random.key(10), model, ys)
    trace = samplers.run(jax.random.key(11), alg, start, num_steps=12, num_chains=400)
    rollout = np.asarray(trace.final_state.estimate)[:, 0, 0]
    replicate_check(rollout, exact, "PPG roll-out")
    paris = np.asarray(smc.paris(jax.random.split(jax.random.key(12), 400), model, ys, lag_one,
                                 8).estimate)[:, 0, 0]
    paris_bias, paris_se = paris.mean() - exact, se_mean(paris, axis=None, ddof=0)
    assert paris_bias < -Z * paris_se  # PaRIS: O(T/N) bias, clearly detected
    assert abs(rollout.mean() - exact) < abs(paris_bias) / 3
    sweeps = np.asarray(trace.stats["sweep_estimate"])[..., 0, 0]  # (chain, sweep)
    first, late = sweeps[:, 0].mean() - exact, sweeps[:, 8:].mean() - exact
    assert abs(late) < abs(first) / 3  # the per-sweep bias decays with the sweep index
    assert trace.positions.shape == (400, 12, 50, 1)  # the reference paths, one per sweep


# ------------------------------------------------------------------------ learning

def test_fisher_score_from_paris_and_ppg_matches_kalman_gradient(data1):
    """Fisher's identity: the smoothed score equals jax.grad of the Kalman log-likelihood."""
    model, ys, _, _ = data1
    ys = ys[:20]

    def family(p):
        return smc.LinearGaussian(p["a"], jnp.exp(p["log_q"]), 1.0, 1.0, 0.0, 1.0)

    params = {"a": jnp.float64(0.9), "log_q": jnp.log(0.5)}
    exact = jax.grad(lambda p: smc.kalman_filter(family(p), ys).log_likelihood)(params)
    initial, additive = smc.fisher_score_fns(family, params, ys)
    est = smc.paris(jax.random.split(jax.random.key(13), 64), family(params), ys, additive, 200,
                    initial_fn=initial)
    for name in ("a", "log_q"):
        replicate_check(est.estimate[name], float(exact[name]), f"score {name}")


def test_bad_input_is_named():
    model = scalar_lg()
    ys = jnp.ones((5, 1))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_particles"):
        smc.particle_filter(key, model, ys, 1)
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        smc.particle_filter(key, model, ys.at[2].set(jnp.nan), 10)
    with pytest.raises(ValueError, match="C has 1 rows"):
        smc.particle_filter(key, model, jnp.ones((5, 3)), 10)
    with pytest.raises(ValueError, match="shapes do not agree"):
        smc.particle_filter(key, model._replace(Q=jnp.eye(2)), ys, 10)
    with pytest.raises(ValueError, match="num_backward"):
        smc.paris(key, model, ys, lag_one, 10, num_backward=0)
    nan_model = smc.StateSpaceModel(model.init_sample, model.init_logpdf, model.transition_sample,
                                    model.transition_logpdf,
                                    lambda x, y: jnp.where(y[0] > 1.5, jnp.nan, 0.0))
    with pytest.raises(smc.WeightError, match="time step 3"):
        smc.particle_filter(key, nan_model, ys.at[3].set(2.0), 10)
    wrong_bound = smc.StateSpaceModel(model.init_sample, model.init_logpdf,
                                      model.transition_sample, model.transition_logpdf,
                                      model.observation_logpdf, log_transition_bound=-5.0)
    with pytest.raises(ValueError, match="not an upper bound"):
        smc.paris(key, wrong_bound, ys, lag_one, 10)
    with pytest.raises(ValueError, match="needs model.log_transition_bound"):
        smc.paris(key, nan_model, ys, lag_one, 10, backward="rejection")

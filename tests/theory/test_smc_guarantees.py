"""Guarantees of PaRIS and PaRIS particle Gibbs, and learning with them (longer studies).

* PaRIS's bias is O(T/N) (Olsson & Westerborn 2017): quadrupling N divides it by about 4.
* PPG inside a stochastic-approximation loop converges to the maximum-likelihood estimate
  (Cardoso et al. 2023, Sec. 4): checked against the exact Kalman MLE found with scipy.
* Markov score climbing reaches the inclusive-KL optimum of a Gaussian AR(1) family, which
  for a linear Gaussian model is a closed form in the RTS moments.
* The stochastic volatility model's parameters are recovered from simulated data.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from samplers import smc
from mc import Z, assert_within, se_mean

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def lg_family(p):
    return smc.LinearGaussian(p["a"], jnp.exp(p["log_q"]), 1.0, 1.0, 0.0, 1.0)


def lag_one(t, x, x_next):
    return x[0] * x_next[0]


def test_paris_bias_is_order_one_over_n():
    """Bias at N = 8 and 32 (1,000 replicates each, T = 50): the ratio is 4 (O(1/N)) within
    5 standard errors of the ratio (delta method)."""
    model = lg_family({"a": jnp.float64(0.9), "log_q": jnp.log(0.5)})
    _, ys = smc.simulate(jax.random.key(0), model, 50)
    rts = smc.rts_smoother(model, ys)
    exact = float(jnp.sum(rts.cross_covs[:, 0, 0] + rts.means[:-1, 0] * rts.means[1:, 0]))
    bias, se = [], []
    for n in (8, 32):
        est = np.asarray(smc.paris(jax.random.split(jax.random.key(n), 1000), model, ys, lag_one,
                                   n).estimate)
        bias.append(est.mean() - exact)
        se.append(se_mean(est, axis=None, ddof=0))
    ratio = bias[0] / bias[1]
    ratio_se = abs(ratio) * np.hypot(se[0] / bias[0], se[1] / bias[1])
    assert bias[1] < -Z * se[1]  # still detectable at N = 32
    assert_within(ratio, ratio_se, 4.0, what="bias(N=8) / bias(N=32)")


def test_ppg_score_ascent_reaches_the_kalman_mle():
    """PPG score ascent (N = 16, 2,000 iterations, mean of the last 1,000) lands within a
    quarter of a statistical standard error (from the Kalman Hessian at the MLE) of the exact
    MLE of (a, log q), T = 200. The optimisation error is negligible next to the estimation
    error: that is what "matches the maximiser" can mean for a stochastic method."""
    truth = {"a": jnp.float64(0.9), "log_q": jnp.log(0.5)}
    _, ys = smc.simulate(jax.random.key(0), lg_family(truth), 200)

    def loglik(v):
        return smc.kalman_filter(lg_family({"a": v[0], "log_q": v[1]}), ys).log_likelihood

    loglik = jax.jit(loglik)
    res = scipy.optimize.minimize(lambda v: -float(loglik(v)), np.array([0.5, 0.0]),
                                  jac=lambda v: -np.asarray(jax.grad(loglik)(v)), method="BFGS")
    se = np.sqrt(np.diag(np.linalg.inv(-np.asarray(jax.hessian(loglik)(res.x)))))
    out = smc.fit(jax.random.key(1), lg_family, ys,
                  {"a": jnp.float64(0.5), "log_q": jnp.float64(0.0)}, estimator="ppg", num_iterations=2000, num_particles=16)
    est = np.array([np.asarray(out.params_history[k])[-1000:].mean() for k in ("a", "log_q")])
    assert np.all(np.abs(est - res.x) < 0.25 * se), (est, res.x, se)


def test_markov_score_climbing_reaches_the_inclusive_kl_optimum():
    """MSC of q(x_0) = N(m, e^{2s}), q(x_{t+1} | x_t) = N(phi x_t, e^{2l}) against a fixed LG
    model: the optimum of E_p[log q] is phi = S_lag / S_sq and e^{2l} = (S_next - 2 phi S_lag
    + phi^2 S_sq) / (T - 1) in the RTS moments. Four independent fits (T = 50, N = 16, 800
    iterations); the mean of their final iterates within 5 standard errors. (Averaging the
    last iterates of each fit shrinks the spread below the drift they share, measured 2e-4.)"""
    model = lg_family({"a": jnp.float64(0.9), "log_q": jnp.log(0.5)})
    _, ys = smc.simulate(jax.random.key(3), model, 50)
    rts = smc.rts_smoother(model, ys)
    second = np.asarray(rts.covs[:, 0, 0] + rts.means[:, 0] ** 2)
    s_lag = float(jnp.sum(rts.cross_covs[:, 0, 0] + rts.means[:-1, 0] * rts.means[1:, 0]))
    s_sq, s_next = second[:-1].sum(), second[1:].sum()
    phi = s_lag / s_sq
    log_sd = 0.5 * np.log((s_next - 2 * phi * s_lag + phi ** 2 * s_sq) / 49)

    def normal_logpdf(x, mean, log_sd_):
        return jnp.sum(-0.5 * ((x - mean) * jnp.exp(-log_sd_)) ** 2 - log_sd_)

    family = smc.VariationalMarkov(
        initial_logpdf=lambda lam, x0: normal_logpdf(x0, lam["m"], lam["s"]),
        transition_logpdf=lambda lam, t, x, x1: normal_logpdf(x1, lam["phi"] * x, lam["l"]))
    lam0 = {"m": jnp.float64(0.0), "s": jnp.float64(0.0), "phi": jnp.float64(0.0),
            "l": jnp.float64(0.0)}
    fits = []
    for seed in range(4):
        out = smc.fit(jax.random.key(10 + seed), lambda _: model, ys, ((), lam0),
                      method="score_climbing", variational=family, num_iterations=800,
                      num_particles=16)
        lam = out.params_history[1]
        fits.append([float(lam[k][-1]) for k in ("phi", "l")])
    fits = np.array(fits)
    for column, expected, name in ((0, phi, "phi"), (1, log_sd, "log sd")):
        assert_within(fits[:, column].mean(), se_mean(fits[:, column]), expected,
                      what=f"MSC {name}")


def test_stochastic_volatility_parameters_are_recovered():
    """Six data sets of T = 300 from the SV model at (mu, rho, sigma) = (-1.02, 0.9702, 0.178)
    (the `particles` defaults); PPG score ascent on (mu, atanh rho, log sigma) from a wrong
    start. The mean estimate over data sets is within 5 standard errors (their spread) of the
    truth, as a consistent estimator's must be up to its O(1/T) bias."""
    truth = smc.StochasticVolatility()

    def family(p):
        return smc.StochasticVolatility(p["mu"], jnp.tanh(p["z"]), jnp.exp(p["log_sigma"]))

    start = {"mu": jnp.float64(0.0), "z": jnp.float64(1.0), "log_sigma": jnp.log(0.5)}
    estimates = []
    for seed in range(6):
        _, ys = smc.simulate(jax.random.key(100 + seed), truth, 300)
        out = smc.fit(jax.random.key(seed), family, ys, start, num_iterations=600,
                      num_particles=16)
        h = out.params_history
        estimates.append([np.asarray(h["mu"])[-300:].mean(), np.tanh(np.asarray(h["z"])[-300:]).mean(),
                          np.exp(np.asarray(h["log_sigma"])[-300:]).mean()])
    estimates = np.array(estimates)
    for column, value, name in ((0, -1.02, "mu"), (1, 0.9702, "rho"), (2, 0.178, "sigma")):
        col = estimates[:, column]
        assert_within(col.mean(), se_mean(col), value, what=f"SV {name}")

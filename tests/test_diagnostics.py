"""Diagnostics against closed forms, scipy, brute force and Monte Carlo standard errors."""
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats as st

from mc import Z, assert_within, se_mean
from samplers import diagnostics

RNG = np.random.default_rng(11)  # test data from numpy: no per-shape jax PRNG compiles
# jitted once: a whole-function compile is far cheaper than eager op-by-op dispatch
gaussian_w2 = jax.jit(diagnostics.gaussian_w2)
gaussian_kl = jax.jit(diagnostics.gaussian_kl)
energy_distance = jax.jit(diagnostics.energy_distance)
mmd = jax.jit(diagnostics.mmd, static_argnames="bandwidth")


def normal32(*shape):
    return RNG.standard_normal(shape, dtype=np.float32)


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


def assert_mean_within_se(values, expected):
    """The replicate mean is within Z standard errors (sd / sqrt(R)) of ``expected``."""
    values = np.asarray(values, np.float64)
    se = se_mean(values)
    assert_within(values.mean(), se, expected, what="replicate mean")
    return se


# ----------------------------------------------------------------- Gaussian distances

def test_gaussian_w2_commuting_covariances_closed_form():
    # S1, S2 share eigenvectors Q: W2^2 = |m1 - m2|^2 + ||S1^1/2 - S2^1/2||_F^2
    #                                   = |m1 - m2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    q, _ = np.linalg.qr(RNG.normal(size=(4, 4)))
    a, b = RNG.uniform(0.1, 3.0, 4), RNG.uniform(0.1, 3.0, 4)
    m1, m2 = RNG.normal(size=4), RNG.normal(size=4)
    expected = math.sqrt(np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    with jax.enable_x64(True):
        w2 = gaussian_w2(m1, q @ np.diag(a) @ q.T, m2, q @ np.diag(b) @ q.T)
    assert float(w2) == pytest.approx(expected, rel=1e-10)


def test_gaussian_w2_general_matches_scipy_sqrtm_and_is_a_symmetric_metric():
    m1, m2 = RNG.normal(size=3), RNG.normal(size=3)
    s1, s2 = random_spd(RNG, 3), random_spd(RNG, 3)
    r2 = scipy.linalg.sqrtm(s2).real
    cross = scipy.linalg.sqrtm(r2 @ s1 @ r2).real
    expected = math.sqrt(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * cross))
    with jax.enable_x64(True):
        forward, backward = float(gaussian_w2(m1, s1, m2, s2)), float(gaussian_w2(m2, s2, m1, s1))
        self_distance = float(gaussian_w2(m1, s1, m1, s1))
    assert forward == pytest.approx(expected, rel=1e-10)
    assert backward == pytest.approx(expected, rel=1e-10)
    # W2(p, p) = 0 up to the documented cancellation bound sqrt(eps * (tr S1 + tr S2)).
    assert self_distance <= math.sqrt(100 * np.finfo(np.float64).eps * 2 * np.trace(s1))


def test_gaussian_kl_matches_independent_formula_and_monte_carlo():
    m0, m1 = RNG.normal(size=3), RNG.normal(size=3)
    s0, s1 = random_spd(RNG, 3), random_spd(RNG, 3)
    inv1 = np.linalg.inv(s1)
    formula = 0.5 * (np.linalg.slogdet(s1)[1] - np.linalg.slogdet(s0)[1] - 3
                     + np.trace(inv1 @ s0) + (m1 - m0) @ inv1 @ (m1 - m0))
    with jax.enable_x64(True):
        kl = float(gaussian_kl(m0, s0, m1, s1))
        self_kl = float(gaussian_kl(m0, s0, m0, s0))
    assert kl == pytest.approx(formula, rel=1e-10)
    assert self_kl == pytest.approx(0.0, abs=1e-12)
    # KL = E_p0[log p0 - log p1], estimated with scipy log-densities
    x = st.multivariate_normal(m0, s0).rvs(size=200_000, random_state=RNG)
    log_ratio = st.multivariate_normal(m0, s0).logpdf(x) - st.multivariate_normal(m1, s1).logpdf(x)
    assert_mean_within_se(log_ratio, kl)


# ----------------------------------------------------------------------- empirical W2

def test_empirical_w2_in_one_dimension_is_the_sorted_coupling():
    x, y = RNG.normal(size=60), RNG.exponential(size=60)
    expected = math.sqrt(np.mean((np.sort(x) - np.sort(y)) ** 2))
    assert diagnostics.empirical_w2(x, y) == pytest.approx(expected, rel=1e-12)
    assert diagnostics.empirical_w2(x[:, None], y[:, None]) == pytest.approx(expected, rel=1e-12)


def test_empirical_w2_matches_brute_force_over_permutations():
    x, y = RNG.normal(size=(6, 2)), RNG.normal(size=(6, 2)) + 1.0
    cost = scipy.spatial.distance.cdist(x, y, "sqeuclidean")
    best = min(cost[range(6), list(p)].mean() for p in itertools.permutations(range(6)))
    assert diagnostics.empirical_w2(x, y) == pytest.approx(math.sqrt(best), rel=1e-12)


# ---------------------------------------------------------------------------- MMD

BANDWIDTH = 1.0
R, N, D = 200, 40, 2


@functools.cache
def batched_mmd():
    """MMD^2 over a batch of replicate sample pairs, compiled once for shape (R, N, D)."""
    return jax.jit(jax.vmap(functools.partial(diagnostics.mmd, bandwidth=BANDWIDTH)))


def expected_rbf(mean_diff, var_sum, d=D, h=BANDWIDTH):
    """E exp(-|X - Y|^2 / 2h^2) for X - Y ~ N(mean_diff, var_sum I_d)."""
    scale2 = h**2 + var_sum
    return (h**2 / scale2) ** (d / 2) * math.exp(-np.sum(mean_diff**2) / (2 * scale2))


def test_mmd_is_unbiased_zero_for_the_same_law():
    values = batched_mmd()(normal32(R, N, D), normal32(R, N, D))
    assert_mean_within_se(values, 0.0)


def test_mmd_matches_gaussian_closed_form_for_different_laws():
    # X ~ N(0, I), Y ~ N(mu, s^2 I): MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y).
    mu, s = np.array([1.0, 0.0]), 1.5
    expected = (expected_rbf(np.zeros(D), 2.0) + expected_rbf(np.zeros(D), 2 * s**2)
                - 2 * expected_rbf(mu, 1.0 + s**2))
    y = mu.astype(np.float32) + np.float32(s) * normal32(R, N, D)
    values = batched_mmd()(normal32(R, N, D), y)
    se = assert_mean_within_se(values, expected)
    assert expected > 10 * se  # clearly positive at this sample size


def test_mmd_median_heuristic_uses_median_pairwise_distance():
    x, y = RNG.normal(size=(15, 3)), RNG.normal(size=(12, 3)) + 0.5
    h = np.median(scipy.spatial.distance.pdist(np.concatenate([x, y])))
    with jax.enable_x64(True):
        assert float(mmd(x, y)) == pytest.approx(float(mmd(x, y, bandwidth=float(h))), rel=1e-10)


# ------------------------------------------------------------------- energy distance

def test_energy_distance_matches_scipy_in_one_dimension_and_brute_force_in_three():
    x, y = RNG.normal(size=30), RNG.normal(size=25) * 2.0 + 0.3
    with jax.enable_x64(True):
        ours_1d = float(energy_distance(x[:, None], y[:, None]))
        a, b = RNG.normal(size=(20, 3)), RNG.normal(size=(20, 3)) + 1.0
        ours_3d = float(energy_distance(a, b))
        symmetric = float(energy_distance(b, a))
        zero = float(energy_distance(a, a))
    assert ours_1d == pytest.approx(st.energy_distance(x, y) ** 2, rel=1e-10)
    cdist = scipy.spatial.distance.cdist
    brute = 2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean()
    assert ours_3d == pytest.approx(brute, rel=1e-10)
    assert symmetric == pytest.approx(brute, rel=1e-10)
    assert zero == pytest.approx(0.0, abs=1e-12)  # rounding of sums reassociated by XLA


# ---------------------------------------------------------------------------- KSD

def autodiff_stein_kernel(score_fn, c, beta):
    """k0(x, y) = div_x div_y k + grad_x k . s(y) + grad_y k . s(x) + k s(x) . s(y), by autodiff."""
    def k(x, y):
        return (c**2 + jnp.sum((x - y) ** 2)) ** beta

    def k0(x, y):
        div = jnp.trace(jax.jacfwd(jax.grad(k, argnums=1), argnums=0)(x, y))
        sx, sy = score_fn(x), score_fn(y)
        return div + jax.grad(k, 0)(x, y) @ sy + jax.grad(k, 1)(x, y) @ sx + k(x, y) * sx @ sy

    return k0


def test_ksd_closed_form_kernel_matches_autodiff_for_both_statistics_and_any_block():
    def score(x):  # a non-Gaussian score: p(x) proportional to exp(-sum x^4 / 4 - x_0 x_1)
        return -x**3 - jnp.array([x[1], x[0]])

    c, beta, n = 1.3, -0.3, 15
    with jax.enable_x64(True):
        x = jnp.asarray(RNG.normal(size=(n, 2)))
        k0 = autodiff_stein_kernel(score, c, beta)
        gram = jax.jit(jax.vmap(jax.vmap(k0, (None, 0)), (0, None)))(x, x)
        v_expected = float(jnp.mean(gram))
        u_expected = float((jnp.sum(gram) - jnp.trace(gram)) / (n * (n - 1)))
        for block in (4, 64):  # 15 = 3 * 4 + 3 exercises a ragged last block; 64 one block
            v, u = jax.jit(lambda z, b=block: tuple(
                diagnostics.ksd(z, score, c, beta, statistic=s, block_size=b) for s in "vu"))(x)
            assert float(v) == pytest.approx(v_expected, rel=1e-10)
            assert float(u) == pytest.approx(u_expected, rel=1e-10)


@functools.cache
def batched_ksd():
    """Both KSD^2 statistics of N(0, I) replicates, jitted (compiled once per shape)."""
    def both(x):
        return (diagnostics.ksd(x, lambda z: -z), diagnostics.ksd(x, lambda z: -z, statistic="u"))
    return jax.jit(jax.vmap(both))


def test_ksd_v_statistic_of_exact_samples_decays_exactly_as_one_over_n():
    # For i.i.d. x_i ~ p, E[KSD^2_V] = E_p k0(x, x) / n (the off-diagonal mean is 0 by
    # Stein's identity). For the IMQ kernel grad k(x, x) = 0 and div_x div_y k(x, x) =
    # -2 beta d c^(2 beta - 2), so k0(x, x) = c^(2 beta) |s(x)|^2 - 2 beta d c^(2 beta - 2);
    # with p = N(0, I_d), E|s|^2 = d, and c = 1, beta = -1/2 this is 2 d.
    d, replicates = 2, 100
    for n in (50, 200):
        v, u = batched_ksd()(normal32(replicates, n, d))
        assert_mean_within_se(n * np.asarray(v), 2.0 * d)
        assert_mean_within_se(u, 0.0)


def test_ksd_is_larger_for_a_shifted_sample():
    d, replicates, n = 2, 100, 200
    exact, _ = batched_ksd()(normal32(replicates, n, d))
    shifted, _ = batched_ksd()(normal32(replicates, n, d) + np.float32([0.5, 0.0]))
    difference = np.asarray(shifted, np.float64) - np.asarray(exact, np.float64)
    assert difference.mean() > Z * se_mean(difference)


# ------------------------------------------------------------------------- ESS, R-hat

def test_ess_of_iid_draws_is_the_number_of_draws():
    chains, draws, components = 4, 1000, 50
    x = RNG.normal(size=(chains, draws, components))
    ess = diagnostics.ess(x)
    assert isinstance(ess, np.ndarray) and ess.shape == (components,)
    # each component's ESS is within Z sampling sds (spread across components) of n
    sd = ess.std(ddof=1)
    np.testing.assert_array_less(np.abs(ess - chains * draws), Z * sd)
    assert diagnostics.ess(x[..., 0]).shape == ()
    assert diagnostics.ess(x.reshape(chains, draws, 5, 10)).shape == (5, 10)


def test_rhat_is_one_for_iid_chains_and_flags_chains_with_different_means():
    x = RNG.normal(size=(4, 1000, 50))
    rhat = diagnostics.rhat(x)
    assert rhat.shape == (50,)
    assert np.all(rhat < 1.01)  # Vehtari et al. (2021) recommended threshold
    np.testing.assert_array_less(np.abs(rhat - 1.0), Z * rhat.std(ddof=1))
    shifted = x + np.array([0.0, 0.0, 0.0, 3.0])[:, None, None]
    assert np.all(diagnostics.rhat(shifted) > 1.1)


# ------------------------------------------------------------------------- bad input

def _gaussian_score(x):
    return -x


@pytest.mark.parametrize("call, argument", [
    (lambda: diagnostics.ksd(np.zeros(5), _gaussian_score), "samples"),
    (lambda: diagnostics.ksd(np.zeros((5, 2)), lambda x: jnp.sum(x)), "score_fn"),
    (lambda: diagnostics.ksd(np.zeros((5, 2)), _gaussian_score, c=0.0), "c"),
    (lambda: diagnostics.ksd(np.zeros((5, 2)), _gaussian_score, beta=0.5), "beta"),
    (lambda: diagnostics.ksd(np.zeros((5, 2)), _gaussian_score, statistic="w"), "statistic"),
    (lambda: diagnostics.ksd(np.zeros((5, 2)), _gaussian_score, block_size=0), "block_size"),
    (lambda: diagnostics.mmd(np.zeros(5), np.zeros((5, 1))), "x"),
    (lambda: diagnostics.mmd(np.zeros((5, 2)), np.zeros((5, 3))), "y"),
    (lambda: diagnostics.mmd(np.zeros((1, 2)), np.zeros((5, 2))), "x"),
    (lambda: diagnostics.mmd(np.zeros((5, 2)), np.zeros((5, 2)), bandwidth=-1.0), "bandwidth"),
    (lambda: diagnostics.energy_distance(np.zeros((5, 2)), np.zeros(5)), "y"),
    (lambda: diagnostics.gaussian_w2(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), "S1"),
    (lambda: diagnostics.gaussian_w2(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), "m2"),
    (lambda: diagnostics.gaussian_kl(np.zeros((2, 2)), np.eye(2), np.zeros(2), np.eye(2)), "m0"),
    (lambda: diagnostics.gaussian_kl(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3)), "S1"),
    (lambda: diagnostics.empirical_w2(np.zeros((5, 2)), np.zeros((4, 2))), "y"),
    (lambda: diagnostics.empirical_w2(np.zeros((5, 2)), np.zeros((5, 3))), "y"),
    (lambda: diagnostics.ess(np.zeros(10)), "x"),
    (lambda: diagnostics.rhat(np.zeros(10)), "x"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=rf"^{argument} "):
        call()


def test_sliced_wasserstein_to_reference_compares_draws_with_reference():
    """Draws that translate the reference by s: every W_l equals the lower control variate
    (theta_l^T s)^2 (Nguyen & Ho 2024, eq. 8), so the estimate is its mean |s|^2 / d."""
    rng = np.random.default_rng(22)
    reference = rng.standard_normal((120, 3)).astype(np.float32)
    shift = np.array([1.0, 0.0, -2.0], np.float32)
    draws = (reference + shift).reshape(4, 30, 3)                # (chain, draw, d)
    est = diagnostics.sliced_wasserstein_to_reference(jax.random.key(0), draws, reference,
                                                      chain_axes=2, control_variate="lower")
    np.testing.assert_allclose(float(est.value), shift @ shift / 3, rtol=1e-4)
    # pytree draws are flattened leaf by leaf
    tree = {"a": draws[..., :1], "b": draws[..., 1:]}
    ref_tree = {"a": reference[:, :1], "b": reference[:, 1:]}
    est2 = diagnostics.sliced_wasserstein_to_reference(jax.random.key(0), tree, ref_tree,
                                                       chain_axes=2, control_variate="lower")
    np.testing.assert_allclose(float(est2.value), float(est.value), rtol=1e-6)
    with pytest.raises(ValueError, match="reference draws have 2 coordinates"):
        diagnostics.sliced_wasserstein_to_reference(jax.random.key(0), draws, reference[:, :2],
                                                    chain_axes=2)

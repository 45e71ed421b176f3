"""FA-LD against its exact law on quadratic clients (method note langevin-fald-fbgvi-detail.md §2.3).

For f_c(x) = 1/2 (x - mu_c)^T A_c (x - mu_c), one round is x' = M x + b + e with, for server
weights w_c (w = p under full participation) and G_c = I - eta A_c / p_c,
  M = sum_c w_c G_c^K,  b = sum_c w_c (I - G_c^K) mu_c,
  Q = sum_j [2 eta rho^2 (sum_c w_c G_c^j)^2 + 2 eta (1 - rho^2) sum_c (w_c^2 / p_c) G_c^{2j}];
the stationary mean solves (I - M) m = b and the covariance S = M S M^T + Q (scipy). Under
partial participation (M, b, Q) is random and the stationary moments follow by enumerating
the reporting sets. Tolerances: 5 Monte Carlo standard errors (ESS from ArviZ).
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
from mc import Z, assert_within, mc_mean
from samplers import federated
from samplers.verify.federated import client_logdensities as _lps
from samplers.verify.federated import round_map as _round_map
from samplers.verify.federated import stationary as _stationary


def _stationary_partial(a, mu, p, eta, K, rho, scheme, S):
    """Scalar clients: stationary mean and variance of the random round map."""
    n = len(p)
    if scheme == "i":
        draws = [(idx, np.prod([p[i] for i in idx])) for idx in itertools.product(range(n), repeat=S)]
    else:
        subsets = list(itertools.combinations(range(n), S))
        draws = [(idx, 1.0 / len(subsets)) for idx in subsets]
    EM = Eb = EM2 = EMb = Eb2 = EQ = 0.0
    for idx, prob in draws:
        w = np.bincount(idx, minlength=n) / S
        M, b, Q = (float(v.squeeze()) for v in _round_map(a[:, None, None], mu[:, None], p, w, eta, K, rho))
        EM += prob * M
        Eb += prob * b
        EM2 += prob * M ** 2
        EMb += prob * M * b
        Eb2 += prob * b ** 2
        EQ += prob * Q
    m = Eb / (1 - EM)
    second = (2 * m * EMb + Eb2 + EQ) / (1 - EM2)
    return m, second - m ** 2


def _run(fed, x0, rounds, warmup, chains=500, key=0):
    """Draws after ``warmup`` rounds (run as one compiled loop: a single compile per test)."""
    trace = samplers.run(jax.random.key(key), fed, jnp.asarray(x0, jnp.float32), warmup + rounds,
                         num_chains=chains)
    return np.asarray(trace.positions, np.float64)[:, warmup:]


# F1 of the note: N = 2, p = (1/2, 1/2), A = (1, 3), mu = (-1, 2); posterior N(1.25, 0.25)
A1, MU1, P1 = np.array([[[1.0]], [[3.0]]]), np.array([[-1.0], [2.0]]), np.array([0.5, 0.5])
F1_TABLE = {(0.05, 1, 0): (1.25, 0.277778), (0.05, 5, 0): (1.010399, 0.311477),
            (0.05, 5, 1): (1.010399, 0.297915), (0.05, 20, 0): (0.596488, 0.358650),
            (0.05, 20, 1): (0.596488, 0.314955), (0.01, 5, 0): (1.204149, 0.260583)}
SLOW_F1 = {(0.05, 20, 1)}  # the correlated-noise K = 20 row runs with `pytest -m slow`


@pytest.fixture(scope="module")
def f1_runs():
    """Long-run draws of FA-LD for each (eta, K, rho) of the note's table F1."""
    runs = {}
    for eta, K, rho in set(F1_TABLE) - SLOW_F1:
        fed = federated.fald(_lps(A1, MU1), K, eta, noise=float(rho), weights=P1)
        runs[eta, K, rho] = _run(fed, [1.0], 300, 100 if eta * K >= 0.25 else 300)[..., 0]
    return runs


def test_closed_forms_reproduce_the_note_table():
    for (eta, K, rho), (mean, var) in F1_TABLE.items():
        m, S = _stationary(A1, MU1, P1, eta, K, rho)
        np.testing.assert_allclose([m[0], S[0, 0]], [mean, var], atol=2e-6)


def test_full_participation_matches_the_exact_stationary_law(f1_runs):
    for (eta, K, rho), x in f1_runs.items():
        m, S = _stationary(A1, MU1, P1, eta, K, rho)
        assert_within(*mc_mean(x), m[0], what=f"mean eta={eta} K={K} rho={rho}")
        assert_within(*mc_mean((x - m[0]) ** 2), S[0, 0], what=f"var eta={eta} K={K} rho={rho}")


@pytest.mark.slow
def test_correlated_noise_with_many_local_steps_matches_the_exact_law():
    (eta, K, rho), = SLOW_F1
    fed = federated.fald(_lps(A1, MU1), K, eta, noise="correlated", weights=P1)
    x = _run(fed, [1.0], 300, 100)[..., 0]
    m, S = _stationary(A1, MU1, P1, eta, K, rho)
    assert_within(*mc_mean(x), m[0], what="mean")
    assert_within(*mc_mean((x - m[0]) ** 2), S[0, 0], what="var")


def test_heterogeneous_two_dimensional_clients_match_lyapunov():
    rng = np.random.default_rng(0)
    A = np.stack([(lambda q: q @ np.diag(ev) @ q.T)(np.linalg.qr(rng.normal(size=(2, 2)))[0])
                  for ev in ([0.5, 2.0], [1.0, 4.0], [3.0, 0.8])])
    mu = np.array([[-1.0, 1.0], [2.0, 0.0], [0.5, -2.0]])
    p = np.array([0.2, 0.3, 0.5])
    m, S = _stationary(A, mu, p, 0.02, 5, 0.0)
    x = _run(federated.fald(_lps(A, mu), 5, 0.02, weights=p), m, 300, 200)
    for i in range(2):
        assert_within(*mc_mean(x[..., i]), m[i], what=f"mean {i}")
        for j in range(i, 2):
            prod = (x[..., i] - m[i]) * (x[..., j] - m[j])
            assert_within(*mc_mean(prod), S[i, j], what=f"cov {i}{j}")


def test_bias_grows_with_local_steps_and_heterogeneity_and_vanishes_with_eta(f1_runs):
    """Theorem 4.7's direction: the bias grows with K - 1 and with heterogeneity and shrinks
    with eta at fixed K. For Gaussians it is O(eta) (note §2.3 item 3), first order
    -((K - 1) eta / 2) A^-1 sum_c (A_c^2 / p_c)(mu_c - mu_post)."""
    post = 1.25

    def bias(key):
        m, se = mc_mean(f1_runs[key])
        return m - post, se

    b1, b5, b20 = bias((0.05, 1, 0)), bias((0.05, 5, 0)), bias((0.05, 20, 0))
    assert abs(b1[0]) < Z * b1[1]  # K = 1 is ULA: no mean bias
    assert b5[0] < -5 * b5[1] and b20[0] < b5[0] - Z * np.hypot(b5[1], b20[1])
    small = bias((0.01, 5, 0))
    assert abs(small[0]) < abs(b5[0]) - Z * np.hypot(small[1], b5[1])
    # first order in eta: -1.125 (K - 1) eta = -0.045 at eta = 0.01, K = 5 (exact -0.0459)
    assert_within(small[0], small[1], _stationary(A1, MU1, P1, 0.01, 5, 0)[0][0] - post)
    # twice the spread of the client means (same curvature): twice the bias
    mu_wide = post + 2 * (MU1 - post)
    x = _run(federated.fald(_lps(A1, mu_wide), 5, 0.05, weights=P1), [1.0], 300, 100)[..., 0]
    m, se = mc_mean(x)
    wide = _stationary(A1, mu_wide, P1, 0.05, 5, 0)[0][0] - post
    assert_within(m - post, se, wide, what="bias with twice the heterogeneity")
    assert m - post < 2 * b5[0] + Z * np.hypot(se, 2 * b5[1]) and abs(wide - 2 * b5[0]) < 0.05


@pytest.mark.parametrize("scheme", ["i", "ii"])
def test_partial_participation_bias_does_not_vanish_with_eta(scheme):
    """Theorem 4.10: with S < N reporting clients the variance stays tempered as eta -> 0
    (limit T / sum A_c with T_I = 1 + (N - 1)/S = 2.5, T_II = N/S = 2 at rho = 0), while
    full participation's goes to the posterior's, 0.1 (note §2.3 item 5, table F2)."""
    a, mu, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([-2.0, -1.0, 1.0, 3.0]), np.full(4, 0.25)
    limit = {"i": 0.25, "ii": 0.2}[scheme]
    exact = {eta: _stationary_partial(a, mu, p, eta, 5, 0.0, scheme, 2) for eta in (1e-2, 1e-3, 1e-5)}
    full = {eta: _stationary(a[:, None, None], mu[:, None], p, eta, 5, 0.0)[1][0, 0] for eta in exact}
    # the exact law: full participation's variance -> 0.1, partial's -> its limit, not 0.1
    assert abs(full[1e-5] - 0.1) < 1e-4 and abs(exact[1e-5][1] - limit) < 1e-3
    assert exact[1e-2][1] > exact[1e-3][1] > exact[1e-5][1] > 2 * full[1e-5]
    # and the sampler follows it at eta = 1e-3, where full participation is already at 0.101
    make = federated.scheme_i if scheme == "i" else federated.scheme_ii
    lps = _lps(a[:, None, None], mu[:, None])
    x = _run(federated.fald(lps, 5, 1e-3, weights=p, participation=make(2)), [1.1], 600, 500)[..., 0]
    m, var = exact[1e-3]
    assert_within(*mc_mean(x), m, what=f"scheme {scheme} mean")
    v, se = mc_mean((x - m) ** 2)
    assert_within(v, se, var, what=f"scheme {scheme} variance")
    assert v - full[1e-3] > Z * se  # measurably above full participation's variance

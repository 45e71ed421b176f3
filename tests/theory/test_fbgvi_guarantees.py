"""FB-GVI's guarantees, measured ([Diao2023]: Diao, Balasubramanian, Chewi, Salim, ICML 2023,
arXiv 2304.05398).

* Theorem (strongly log-concave, h <= 1/beta): W2^2(q_k, q*) <= (1 - alpha h)^k W2^2(q_0, q*);
  on a Gaussian target q* = pi. Measured per step for three step sizes, against an
  independent numpy oracle (the recursion in the target's eigenbasis), and the measured
  asymptotic factor is (1 - alpha h)^2, inside the theorem's (1 - alpha h).
* The issue says FB-GVI converges to (mu, Sigma) exactly; measured (method note §3.2):
  that holds iff h * beta <= 1. For 1 < h lambda < 2 the covariance converges to
  h / (2 - h lambda) -- tested as the true claim -- while BW-GD cycles at h = 1/beta and
  is erratic (non-convergent, W2^2 up to ~100) at 1.1/beta.
* Stochastic FB-GVI: the stationary E|m - mu|^2 is h tr((2I - hA)^{-1}) exactly (O(h));
  measured with Monte Carlo standard errors, and its log-log slope in h.
* Bayesian logistic regression (d = 10, N(0, I) prior): FB-GVI reaches the best Gaussian
  (first-order conditions E[grad V] = 0, E[hess V] = Sigma^{-1}); its objective is at least as
  good as BW-GD's and reparameterised VI's; at h = 1.2 / lambda_max(E_q*[hess V]) BW-GD
  oscillates without settling (measured: it does not diverge on this target, unlike on a
  Gaussian) while FB-GVI stays SPD and converges, to a slightly biased fixed point.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import vi
from mc import assert_within, mc_mean, weighted_slope
from tests.test_vi import D, gaussian_problem, quadratic_logdensity
from vi.verify import stationary_mean_error, stationary_mean_law

A, MU, LAM = gaussian_problem()
BETA, ALPHA = LAM.max(), LAM.min()
Q_EIG = np.linalg.eigh(A)[1]


def _oracle_w2sq(h, num_steps, m0, s0=1.0):
    """W2^2(q_k, pi) for k = 1..num_steps from the scalar recursions in A's eigenbasis
    (Sigma_0 = s0 I commutes with A): e_k = (1 - h lam)^k e_0 and
    s -> ((sqrt((1-h lam)^2 s) + sqrt((1-h lam)^2 s + 4h)) / 2)^2 (method note §3.2)."""
    lam = np.linalg.eigvalsh(A)
    e = Q_EIG.T @ (m0 - MU)
    s = np.full(D, s0)
    out = []
    for _ in range(num_steps):
        e = (1 - h * lam) * e
        sf = (1 - h * lam) ** 2 * s
        s = ((np.sqrt(sf) + np.sqrt(sf + 4 * h)) / 2) ** 2
        out.append(np.sum(e**2) + np.sum((np.sqrt(s) - 1 / np.sqrt(lam)) ** 2))
    return np.array(out)


def test_w2_contraction_per_step_is_within_the_theorem_for_three_step_sizes():
    steps = 600
    measured = {}
    with jax.enable_x64(True):
        lp = quadratic_logdensity(A, MU)
        for c in (0.25, 0.5, 1.0):
            h = c / BETA
            q0 = vi.Gaussian.standard(D)
            _, tr = vi.fit(jax.random.key(0), vi.fbgvi(lp, h, expectation="exact_gaussian"),
                           q0, steps)
            w2 = np.concatenate([[np.sum(MU**2) + np.sum((1 - 1 / np.sqrt(LAM)) ** 2)],
                                 tr.positions.w2_squared_to(MU, np.linalg.inv(A))[0]])
            oracle = _oracle_w2sq(h, steps, np.zeros(D))
            # W2^2 is a difference of traces of size ~3: float64 rounding ~ 64 eps * 3 < 1e-13
            np.testing.assert_allclose(w2[1:], oracle, rtol=1e-9, atol=1e-13)
            keep = w2[1:] > 1e-8  # there the ratios carry relative rounding below 1e-5
            ratios = w2[1:][keep] / w2[:-1][keep]
            bound = 1 - ALPHA * h
            assert ratios.max() <= bound, (c, ratios.max(), bound)
            # asymptotically the slowest mode is the mean along alpha: factor (1 - alpha h)^2
            np.testing.assert_allclose(ratios[-1], (1 - ALPHA * h) ** 2, rtol=1e-5)
            measured[c] = (ratios.max(), bound, (1 - ALPHA * h) ** 2)
    # measured max factor ~ (1 - alpha h)^2 (0.975156, 0.950625, 0.902500 on this instance;
    # the method note's 0.975159, 0.950627, 0.902502 on another random rotation)
    print({c: tuple(round(v, 6) for v in m) for c, m in measured.items()})


def test_beyond_one_over_beta_fbgvi_is_biased_but_stable_while_bwgd_cycles_or_diverges():
    steps = 600
    with jax.enable_x64(True):
        lp = quadratic_logdensity(A, MU)
        q0 = vi.Gaussian.standard(D)
        h = 1.5 / BETA
        q, _ = vi.fit(jax.random.key(0), vi.fbgvi(lp, h, expectation="exact_gaussian"), q0,
                      steps)
        lam = np.linalg.eigvalsh(A)
        expected = np.where(h * lam <= 1, 1 / lam, h / (2 - h * lam))
        np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(np.asarray(q.cov))),
                                   np.sort(expected), rtol=1e-8)
        np.testing.assert_allclose(np.asarray(q.mean), MU, atol=1e-10)
        w2_0 = np.sum(MU**2) + np.sum((1 - 1 / np.sqrt(LAM)) ** 2)
        # BW-GD at h = 1/beta: the stiffest covariance direction cycles s <-> 1/(beta^2 s)
        _, tb = vi.fit(jax.random.key(0), vi.bwgd(lp, 1.0 / BETA, expectation="exact_gaussian"),
                       q0, steps)
        stalled = tb.positions.w2_squared_to(MU, np.linalg.inv(A))[0]
        # a period-2 cycle: W2^2 alternates (0.603, 0.030 here) and never goes to 0
        np.testing.assert_allclose(stalled[-1], stalled[-3], rtol=1e-9)
        assert max(stalled[-2:]) > 0.5 and abs(stalled[-1] - stalled[-2]) > 0.5
        # BW-GD at h = 1.1/beta: the fixed point is unstable (local rate |1 - 2 h beta| = 1.2);
        # measured, the orbit does not blow up to infinity here but wanders erratically
        # (W2^2 between 0.006 and 132 over the last 50 steps): it never converges
        _, td = vi.fit(jax.random.key(0), vi.bwgd(lp, 1.1 / BETA, expectation="exact_gaussian"),
                       q0, steps, on_nonfinite="flag")
        w2d = td.positions.w2_squared_to(MU, np.linalg.inv(A))[0]
        assert not np.all(np.isfinite(w2d)) or w2d[-50:].max() > 10 * w2_0
        # FB-GVI at the same step: finite, converged, biased only in the direction h beta > 1
        q, _ = vi.fit(jax.random.key(0), vi.fbgvi(lp, 1.1 / BETA, expectation="exact_gaussian"),
                      q0, steps)
        h = 1.1 / BETA
        expected = np.where(h * lam <= 1, 1 / lam, h / (2 - h * lam))
        np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(np.asarray(q.cov))),
                                   np.sort(expected), rtol=1e-8)


def test_stochastic_fbgvi_stationary_error_is_linear_in_h():
    """Exact Hessian (constant), Sigma_0 = A^{-1}: Sigma stays A^{-1}, and the mean is the
    AR(1) m' - mu = (I - hA)(m - mu) - h A^{1/2} u with stationary law N(mu, h (2I - hA)^{-1}).
    Chains start from that law (numpy draws), so every step is stationary."""
    hs = np.array([0.005, 0.01, 0.02, 0.04])
    chains, steps = 64, 2000
    lp = quadratic_logdensity(A, MU)
    rng = np.random.default_rng(11)
    floors, ses, exact = [], [], []
    for i, h in enumerate(hs):
        P = stationary_mean_law(A, h)
        m0 = rng.multivariate_normal(MU, P, size=chains).astype(np.float32)
        err = stationary_mean_error(jax.random.key(i), vi.sfbgvi(lp, h), A, MU, m0, steps)
        est, se = mc_mean(err)
        assert_within(est, se, np.trace(P), what=f"E|m - mu|^2 at h={h}")
        floors.append(est), ses.append(se), exact.append(np.trace(P))
    # weighted least squares slope of log floor on log h, its standard error (delta method);
    # the exact floors' slope with the same weights (se scaled to keep y / se)
    floors, ses, exact = np.array(floors), np.array(ses), np.array(exact)
    slope, slope_se = weighted_slope(hs, floors, ses)
    exact_slope, _ = weighted_slope(hs, exact, exact * ses / floors)
    # the exact floor is h tr((2I - hA)^{-1}) = h d/2 + O(h^2): its slope over these h (with
    # h beta up to 0.8) is 1.106, not exactly 1; the measured slope must match it
    assert_within(slope, slope_se, exact_slope, what="slope of the stationary floor")
    print(f"slope {slope:.3f} +- {slope_se:.3f}, exact {exact_slope:.3f}")


# --------------------------------------------------------------- logistic regression

GH_X, GH_W = np.polynomial.hermite_e.hermegauss(40)
GH_W = GH_W / GH_W.sum()


def _logistic_problem(seed=4, n=100, d=10):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / np.sqrt(d) * 2.0
    theta = rng.standard_normal(d)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ theta))).astype(float)
    return X, y


def _glm_expectations(X, y):
    """E_q[grad V], E_q[hess V] for V = sum log(1 + e^eta_i) - y_i eta_i + |w|^2/2, eta_i = x_i.w:
    eta_i ~ N(x_i.m, x_i' Sigma x_i) under q, so both are 1-d Gauss-Hermite integrals."""
    Xj, yj, nodes, weights = (jnp.asarray(a) for a in (X, y, GH_X, GH_W))

    def expectation(key, q):
        cov = q.cov
        loc, sd = Xj @ q.mean, jnp.sqrt(jnp.einsum("ij,jk,ik->i", Xj, cov, Xj))
        p = jax.nn.sigmoid(loc[:, None] + sd[:, None] * nodes[None, :])
        e1, e2 = p @ weights, (p * (1 - p)) @ weights
        return Xj.T @ (e1 - yj) + q.mean, (Xj.T * e2) @ Xj + jnp.eye(q.dim, dtype=cov.dtype)

    return expectation


def _objective(X, y, m, S):
    """F(q) = E_q[V] - H(q) (KL(q || pi) - log Z), exact up to 40-point quadrature (float64)."""
    m, S = np.asarray(m, np.float64), np.asarray(S, np.float64)
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(S))):
        return np.inf
    loc, sd = X @ m, np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, S, X), 0))
    softplus = np.logaddexp(0, loc[:, None] + sd[:, None] * GH_X[None, :]) @ GH_W
    energy = softplus.sum() - y @ loc + 0.5 * (m @ m + np.trace(S))
    sign, logdet = np.linalg.slogdet(S)
    return energy - 0.5 * logdet if sign > 0 else np.inf


def test_logistic_regression_fbgvi_reaches_the_best_gaussian_and_beats_the_baselines():
    X, y = _logistic_problem()
    d = X.shape[1]
    beta = np.linalg.eigvalsh(X.T @ X).max() / 4 + 1.0
    steps = 300  # FB-GVI's slowest rate here is 1 - h lambda_min(H*) = 0.81: 1e-27 after 300
    with jax.enable_x64(True):
        Xj, yj = jnp.asarray(X), jnp.asarray(y)

        def lp(w):
            eta = Xj @ w
            return jnp.sum(yj * eta - jnp.logaddexp(0.0, eta)) - 0.5 * w @ w

        expect = _glm_expectations(X, y)
        q0 = vi.Gaussian.standard(d)
        F = lambda q: _objective(X, y, q.mean, q.cov)  # noqa: E731
        q_fb, _ = vi.fit(jax.random.key(0), vi.fbgvi(lp, 1 / beta, expectation=expect), q0,
                         steps, thin=steps)
        g, H = expect(None, q_fb)
        # the best Gaussian's first-order conditions ([Diao2023] Sec. 2): E grad V = 0, E hess V = Sigma^{-1}
        assert np.abs(np.asarray(g)).max() < 1e-9
        np.testing.assert_allclose(np.asarray(H), np.linalg.inv(np.asarray(q_fb.cov)), atol=1e-8)
        q_bw, _ = vi.fit(jax.random.key(0), vi.bwgd(lp, 1 / beta, expectation=expect), q0,
                         steps, thin=steps)
        q_re, _ = vi.fit(jax.random.key(0), vi.reparam_vi(lp, optax.adam(1e-2), num_samples=8),
                         q0, 1000, thin=1000)
        f_fb, f_bw, f_re = F(q_fb), F(q_bw), F(q_re)
        assert f_fb <= f_bw + 1e-9 and f_fb <= f_re + 1e-9, (f_fb, f_bw, f_re)
        assert f_re - f_fb > 0  # the stochastic baseline has not reached the optimum exactly

        # a step where BW-GD oscillates: h lambda = 1.2 for the top curvature at q*. On this
        # non-Gaussian target it does not diverge but keeps jumping (F - F* from 0.04 to ~20
        # over the last 50 steps); FB-GVI converges to a slightly biased fixed point (h beta > 1).
        lam_star = np.linalg.eigvalsh(np.asarray(H)).max()
        h = 1.2 / lam_star
        _, t_bw = vi.fit(jax.random.key(0), vi.bwgd(lp, h, expectation=expect), q0, steps,
                         on_nonfinite="flag")
        tail = zip(np.asarray(t_bw.positions.mean[0, -50:]), np.asarray(t_bw.positions.cov[0, -50:]))
        f_bw_tail = np.array([_objective(X, y, m, S) for m, S in tail])
        assert np.ptp(f_bw_tail) > 0.1, f_bw_tail - f_fb  # still jumping after 250 steps
        q_big, t_fb = vi.fit(jax.random.key(0), vi.fbgvi(lp, h, expectation=expect), q0, steps,
                             on_nonfinite="raise")
        cov_fb = np.asarray(t_fb.positions.cov[0])
        assert np.linalg.eigvalsh(cov_fb).min() >= h * (1 - 1e-12)
        step_change = np.abs(cov_fb[-1] - cov_fb[-2]).max()
        assert step_change < 1e-10  # converged
        gap = F(q_big) - f_fb
        assert 0 < gap < np.median(f_bw_tail) - f_fb, gap  # biased, but below BW-GD's typical value
        print(f"F* = {f_fb:.6g}; F - F*: bwgd {f_bw - f_fb:.3g} reparam {f_re - f_fb:.3g}; "
              f"at h = 1.2/lambda*: fbgvi gap {gap:.3g}, bwgd gap in [{f_bw_tail.min() - f_fb:.3g}, "
              f"{f_bw_tail.max() - f_fb:.3g}]")


def test_backtracking_rule_follows_the_theorem_at_one_over_beta():
    """The default step rule on a Gaussian target: its cap 1/||E_q hess V|| = 1/beta, and V
    is exactly beta-smooth so the descent test never halves it; the W2^2 trajectory is the
    oracle's at h = 1/beta (independent eigenbasis recursion) and each step contracts by at
    most the theorem's 1 - alpha/beta ([Diao2023] Theorem 3.2)."""
    steps = 200
    with jax.enable_x64(True):
        _, tr = vi.fit(jax.random.key(0), vi.fbgvi(quadratic_logdensity(A, MU),
                                                   expectation="exact_gaussian",
                                                   max_step_size=float("inf")),
                       vi.Gaussian.standard(D), steps)
    w2 = np.concatenate([[np.sum(MU**2) + np.sum((1 - 1 / np.sqrt(LAM)) ** 2)],
                         tr.positions.w2_squared_to(MU, np.linalg.inv(A))[0]])
    np.testing.assert_allclose(w2[1:], _oracle_w2sq(1 / BETA, steps, np.zeros(D)),
                               rtol=1e-9, atol=1e-13)
    keep = w2[1:] > 1e-8
    assert (w2[1:][keep] / w2[:-1][keep]).max() <= 1 - ALPHA / BETA

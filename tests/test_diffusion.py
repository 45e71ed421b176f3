"""Exact and behaviour tests of the ``diffusion`` package: SDE closed forms, exact scores
against autodiff of independently written log-densities, the closed-form Gaussian PF-ODE flow
against a fine RK4 solve of the ODE itself, time grids, bad input, reproducibility.

Orders, log-likelihoods and the papers' claims are in tests/theory/test_diffusion_guarantees.py.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal as jmvn
from scipy import integrate

import diffusion
from mc import assert_within, se_var
from diffusion import scores

SDES = {
    "vp_linear": diffusion.VPSDE(),
    "vp_cosine": diffusion.VPSDE(schedule="cosine"),
    "subvp": diffusion.SubVPSDE(),
    "ve": diffusion.VESDE(),
}
MU = np.array([1.0, -0.5])
COV = np.array([[1.0, 0.6], [0.6, 0.8]])


# ------------------------------------------------------------------------------------ SDEs

@pytest.mark.parametrize("name", list(SDES))
def test_sde_coefficients_match_the_transition(name):
    """f = d log alpha/dt and g^2 = d sigma^2/dt - 2 f sigma^2 (Song et al. eq. 29), checked by
    autodiff in float64; lambda = log(alpha/sigma) and its inverse t_of_log_snr round-trip."""
    sde = SDES[name]
    with jax.enable_x64(True):
        def quantities(t):
            dla = jax.grad(lambda u: jnp.log(sde.alpha(u)))(t)
            dvar = jax.grad(lambda u: sde.sigma(u) ** 2)(t)
            return (sde.drift_coef(t), dla, sde.g2(t), dvar - 2 * dla * sde.sigma(t) ** 2,
                    sde.log_snr(t), jnp.log(sde.alpha(t) / sde.sigma(t)),
                    sde.t_of_log_snr(sde.log_snr(t)))
        ts = jnp.linspace(0.05, sde.t_max - 0.01, 7)
        f, dla, g2, g2_ref, lam, lam_ref, t_back = jax.jit(jax.vmap(quantities))(ts)
        np.testing.assert_allclose(f, dla, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g2, g2_ref, rtol=1e-9)
        np.testing.assert_allclose(lam, lam_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(t_back, ts, rtol=1e-9)


def test_sde_closed_forms_against_outside_numbers():
    """VP linear: alpha_t = exp(-1/2 int_0^t beta) by quadrature; sigma^2 = 1 - alpha^2.
    sub-VP: sigma = 1 - alpha^2. VE: sigma_t = 0.01 * 5000^t. Cosine: alpha_t^2 =
    cos^2((t+s)/(1+s) pi/2) / cos^2(s/(1+s) pi/2) (Nichol & Dhariwal eq. 17)."""
    with jax.enable_x64(True):
        vp, sub, ve, cos = (SDES[k] for k in ("vp_linear", "subvp", "ve", "vp_cosine"))
        for t in (0.1, 0.5, 1.0):
            integral = integrate.quad(lambda u: 0.1 + u * 19.9, 0, t)[0]
            assert float(vp.alpha(t)) == pytest.approx(math.exp(-0.5 * integral), rel=1e-12)
            assert float(vp.sigma(t)) == pytest.approx(math.sqrt(1 - math.exp(-integral)), rel=1e-12)
            assert float(sub.sigma(t)) == pytest.approx(1 - math.exp(-integral), rel=1e-12)
            assert float(ve.sigma(t)) == pytest.approx(0.01 * 5000 ** t, rel=1e-12)
            f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2)  # noqa: E731
            assert float(cos.alpha(t * 0.99)) == pytest.approx(f(t * 0.99) / f(0), rel=1e-12)
        assert ve.prior_std == pytest.approx(50.0)
        assert vp.prior_std == 1.0 and cos.t_max == 0.9946


@pytest.mark.slow
def test_marginal_sampling_moments():
    """x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I): sample mean and variance within 5 standard
    errors (n = 20000; SE of the variance sqrt(2/n) sigma^2)."""
    sde = SDES["vp_linear"]
    n, t = 20_000, 0.4
    x0 = jnp.ones((n, 1))
    xt = np.asarray(sde.sample_marginal(jax.random.key(3), x0, t))[:, 0]
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    assert_within(xt.mean(), s / math.sqrt(n), a, what="mean")
    assert_within(xt.var(), se_var(s ** 2, n), s ** 2, what="variance")


# ---------------------------------------------------------------------------------- scores

def test_exact_scores_are_gradients_of_independent_log_densities():
    """Gaussian and mixture scores = grad of log N(alpha mu, alpha^2 Sigma + sigma^2 I) and of
    log sum_k w_k N(...) written with jax.scipy (not the package's code)."""
    sde = SDES["vp_linear"]
    with jax.enable_x64(True):
        x = jnp.array([0.3, -1.2])
        w = np.array([0.2, 0.5, 0.3])
        means = np.array([[1.0, 0.0], [-1.0, 1.0], [0.0, -2.0]])
        covs = np.stack([COV, 0.3 * np.eye(2), np.diag([0.05, 2.0])])
        gs = scores.gaussian(sde, MU, COV)
        ms = scores.gaussian_mixture(sde, w, means, covs)
        lpm = scores.mixture_log_prob(sde, w, means, covs)

        def compare(t):
            a, s = sde.alpha(t), sde.sigma(t)

            def lp_gauss(y):
                return jmvn.logpdf(y, a * MU, a ** 2 * COV + s ** 2 * jnp.eye(2))

            def lp_mix(y):
                return jax.nn.logsumexp(jnp.stack([
                    jnp.log(w[k]) + jmvn.logpdf(y, a * means[k], a ** 2 * covs[k] + s ** 2 * jnp.eye(2))
                    for k in range(3)]))

            return (gs(x, t), jax.grad(lp_gauss)(x), ms(x, t), jax.grad(lp_mix)(x),
                    lpm(x, t), lp_mix(x))

        g, g_ref, m, m_ref, lp, lp_ref = jax.jit(jax.vmap(compare))(jnp.array([0.01, 0.3, 0.9]))
        np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m, m_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(lp, lp_ref, rtol=1e-12)


def test_noise_predictor_and_denoiser_adapters():
    """eps = -sigma score and D = (x + sigma^2 score)/alpha round-trip to the exact score."""
    sde = SDES["vp_linear"]
    with jax.enable_x64(True):
        exact = scores.gaussian(sde, MU, COV)
        eps = lambda x, t: -sde.sigma(t) * exact(x, t)  # noqa: E731
        den = lambda x, t: (x + sde.sigma(t) ** 2 * exact(x, t)) / sde.alpha(t)  # noqa: E731
        x, t = jnp.array([0.4, 2.0]), 0.37
        np.testing.assert_allclose(scores.from_noise_predictor(sde, eps)(x, t), exact(x, t), rtol=1e-12)
        np.testing.assert_allclose(scores.from_denoiser(sde, den)(x, t), exact(x, t), rtol=1e-10)


# ----------------------------------------------------------------------------- exact flow

@pytest.mark.parametrize("name", [pytest.param("vp_linear", marks=pytest.mark.slow), "vp_cosine",
                                  pytest.param("subvp", marks=pytest.mark.slow), "ve"])
def test_gaussian_flow_solves_the_pf_ode(name):
    """The closed-form flow Phi_{s->t} (per eigen-direction sqrt(v_t/v_s)) is the identity at
    t = s and its t-derivative is the PF-ODE velocity f(t) Phi - g(t)^2/2 score(Phi, t) with the
    exact score (autodiff in float64); by uniqueness of ODE solutions it is the flow. And the
    map carries the covariance alpha_s^2 Sigma + sigma_s^2 I to the one at t."""
    sde = SDES[name]
    with jax.enable_x64(True):
        score = scores.gaussian(sde, MU, COV)
        x_s = np.random.default_rng(0).standard_normal((3, 2)) * sde.prior_std
        s = 0.8 * sde.t_max
        basis = np.concatenate([np.zeros((1, 2)), np.eye(2)])

        @jax.jit
        def check(ts):
            def one(t):
                phi, dphi = jax.jvp(lambda u: diffusion.gaussian_flow(x_s, sde, MU, COV, s, u),
                                    (t,), (jnp.ones_like(t),))
                vel = jax.vmap(lambda y: sde.pf_ode_drift(y, t, score(y, t)))(phi)
                return dphi, vel
            dphi, vel = jax.vmap(one)(ts)
            ident = diffusion.gaussian_flow(x_s, sde, MU, COV, s, s)
            img = diffusion.gaussian_flow(basis, sde, MU, COV, s, 0.2)
            var = [sde.alpha(u) ** 2 * COV + sde.sigma(u) ** 2 * jnp.eye(2) for u in (s, 0.2)]
            return dphi, vel, ident, img, var

        dphi, vel, ident, img, (v_s, v_t) = jax.tree.map(np.asarray, check(jnp.array([0.01, 0.2, 0.5, s])))
        np.testing.assert_allclose(dphi, vel, rtol=1e-9, atol=1e-9 * np.max(np.abs(vel)))
        np.testing.assert_allclose(ident, x_s, rtol=1e-12)
        m = (img[1:] - img[0]).T
        np.testing.assert_allclose(m @ v_s @ m.T, v_t, rtol=1e-10)


# ------------------------------------------------------------------------------ time grids

def test_time_grids():
    """Endpoints exact; "logsnr" has equal lambda steps; "karras" has equal steps in
    (sigma/alpha)^(1/7) (Karras et al. 2022 eq. 5)."""
    sde = SDES["vp_linear"]
    with jax.enable_x64(True):
        grids = {kind: np.asarray(diffusion.time_grid(sde, 10, kind, t_min=1e-3))
                 for kind in diffusion.TIME_GRIDS}
        for ts in grids.values():
            assert ts.shape == (11,) and ts[0] == 1.0 and ts[-1] == 1e-3
            assert np.all(np.diff(ts) < 0)
        # lambda by an independent formula: log alpha - 1/2 log(1 - alpha^2)
        lam = lambda t: -0.25 * t ** 2 * 19.9 - 0.05 * t  # noqa: E731  (log alpha)
        lam_snr = lambda t: lam(t) - 0.5 * np.log(-np.expm1(2 * lam(t)))  # noqa: E731
        d = np.diff(lam_snr(grids["logsnr"]))
        np.testing.assert_allclose(d, d[0], rtol=1e-8)
        k = np.exp(-lam_snr(grids["karras"]) / 7.0)
        np.testing.assert_allclose(np.diff(k), np.diff(k)[0], rtol=1e-7)


def test_nfe_counts():
    assert [diffusion.nfe(s, 10) for s in ("euler", "heun", "rk4", "ddim", "dpm_solver_2",
                                            "dpm_solver_3", "dpm_solver_pp_2m",
                                            "li_accelerated", "ddpm")] == \
        [10, 20, 40, 10, 20, 30, 10, 10, 10]


# ------------------------------------------------------------------------------ bad input

def test_bad_input_errors():
    sde = SDES["vp_linear"]
    score = scores.gaussian(sde, MU, COV)
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match=r"t_min must be < t_max.*t_min=1\.0.*t_max=0\.5"):
        diffusion.solve_ode(x, sde, score, t_min=1.0, t_max=0.5)
    with pytest.raises(ValueError, match="t_min must be > 0"):
        diffusion.solve_ode(x, sde, score, t_min=0.0)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1, got 0"):
        diffusion.solve_ode(x, sde, score, num_steps=0)
    with pytest.raises(ValueError, match="solver must be one of euler, heun, rk4, ddim.*got 'rk45'"):
        diffusion.solve_ode(x, sde, score, solver="rk45")
    with pytest.raises(ValueError, match="euler_maruyama.*got 'heun'"):
        diffusion.solve_sde(jax.random.key(0), x, sde, score, solver="heun")
    with pytest.raises(ValueError, match="time_grid must be one of uniform, logsnr, karras"):
        diffusion.solve_ode(x, sde, score, time_grid="cosine")
    with pytest.raises(TypeError, match=r"score must return an array of shape \(2,\).*got \(\)"):
        diffusion.solve_ode(x, sde, lambda y, t: jnp.sum(y), num_steps=2)
    with pytest.raises(ValueError, match=r"x_T must have shape \(num_points, d\)"):
        diffusion.solve_ode(jnp.zeros(2), sde, score)
    with pytest.raises(ValueError, match="positive semi-definite"):
        scores.gaussian(sde, MU, np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match=r"cov must have shape \(2, 2\)"):
        scores.gaussian(sde, MU, np.eye(3))
    with pytest.raises(ValueError, match="schedule must be one of"):
        diffusion.VPSDE(schedule="quadratic")
    with pytest.raises(ValueError, match="method must be one of exact, hutchinson"):
        diffusion.log_likelihood(x, sde, score, method="skilling")
    with pytest.raises(ValueError, match="dim must be given"):
        diffusion.sample(jax.random.key(0), sde, lambda y, t: y, 4)
    with pytest.raises(ValueError, match="VPSDE only"):
        diffusion.solve_sde(jax.random.key(0), x, SDES["ve"], scores.gaussian(SDES["ve"], MU, COV),
                            solver="li_accelerated_sde")


# ------------------------------------------------------------------------ reproducibility

def test_sample_float32_and_reproducible():
    """Float32 by default; same key, same draws bit for bit; another key, other draws."""
    sde = SDES["vp_linear"]
    score = scores.gaussian(sde, MU, COV)
    a = diffusion.sample(jax.random.key(1), sde, score, 64, solver="ddpm", num_steps=10)
    b = diffusion.sample(jax.random.key(1), sde, score, 64, solver="ddpm", num_steps=10)
    c = diffusion.sample(jax.random.key(2), sde, score, 64, solver="ddpm", num_steps=10)
    assert a.dtype == jnp.float32 and a.shape == (64, 2)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    assert bool(jnp.all(jnp.isfinite(a)))

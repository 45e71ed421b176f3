"""Trained networks as users have them (issue 17, items 1-3): image-shaped events, batched
networks in five parameterisations, conditions and classifier-free guidance with traced
parameters, and discrete-time checkpoints' schedules.

Every network here is an exact one, written in this file from the closed form of Gaussian
data (not with the package's scores): for data N(mu, Sigma), x_t = alpha_t x_0 + sigma_t eps
has E[eps | x_t] = sigma_t (alpha_t^2 Sigma + sigma_t^2 I)^{-1} (x_t - alpha_t mu), and the
other predictions follow from x_0 = (x_t - sigma_t eps) / alpha_t. alpha_t and sigma_t are
written here too: the linear VP schedule's closed form, and for the discrete checkpoint the
log of sqrt(cumprod(1 - beta)) interpolated linearly in the timestep index. Expected laws are
the exact marginals (or the solution of the guided linear ODE by scipy); tolerances are 5
Monte Carlo standard errors computed from the sample size.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import diffusion
from mc import assert_within, se_var
from diffusion import solvers

SHAPE = (4, 4, 2)
D = 32
T_MIN = 1e-3
N_SAMPLES = 2000

_rng = np.random.default_rng(17)
MU = _rng.normal(0.0, 1.0, D)
_U = np.linalg.qr(_rng.normal(size=(D, D)))[0]
LAM = _rng.uniform(0.1, 1.5, D)
COV = (_U * LAM) @ _U.T


def gaussian_params(dtype=jnp.float32):
    """The network's parameters (traced arguments of the sampler)."""
    return {"mu": jnp.asarray(MU, dtype), "u": jnp.asarray(_U, dtype),
            "lam": jnp.asarray(LAM, dtype)}


PARAMS = gaussian_params()

VP = diffusion.VPSDE()
BETAS = np.linspace(1e-4, 0.02, 1000)
DISCRETE = diffusion.DiscreteVPSDE.from_betas(BETAS)
_LOG_ALPHA_N = 0.5 * np.log(np.cumprod(1.0 - BETAS))


def vp_alpha_sigma(t, xp=jnp):
    """Linear VP (beta 0.1 .. 20): log alpha_t = -t^2 19.9/4 - 0.05 t, sigma^2 = 1 - alpha^2
    (``xp``: jax.numpy or numpy)."""
    log_a = -0.25 * t ** 2 * 19.9 - 0.05 * t
    return xp.exp(log_a), xp.sqrt(-xp.expm1(2.0 * log_a))


def discrete_alpha_sigma(index):
    """log alpha piecewise linear in the timestep index through log sqrt(abar_n)."""
    log_a = jnp.interp(index, jnp.arange(1000.0, dtype=index.dtype),
                       jnp.asarray(_LOG_ALPHA_N, index.dtype))
    return jnp.exp(log_a), jnp.sqrt(-jnp.expm1(2.0 * log_a))


def _posterior(params, x, a, s):
    """Flattened x, the eigen-coordinates z = U^T (x - a mu) and v = a^2 lam + s^2."""
    assert x.shape[1:] == SHAPE, x.shape  # the network sees the user's event shape
    xf = x.reshape(x.shape[0], -1)
    a, s = a[:, None], s[:, None]
    z = (xf - a * params["mu"]) @ params["u"]
    return xf, z, a ** 2 * params["lam"] + s ** 2, a, s


def gaussian_net(kind, alpha_sigma):
    """The exact network of N(MU, COV) predicting ``kind`` (batched, image-shaped)."""
    def apply(params, x, t, cond):
        assert cond is None and t.shape == x.shape[:1]
        if kind == "edm":  # input c_in x~, time c_noise = ln(sigma)/4 (Karras et al. Table 1)
            sig = jnp.exp(4.0 * t)[:, None]
            sd = 0.5
            xt = x.reshape(x.shape[0], -1) * jnp.sqrt(sig ** 2 + sd ** 2)
            z = (xt - params["mu"]) @ params["u"]
            den = params["mu"] + (z * params["lam"] / (params["lam"] + sig ** 2)) @ params["u"].T
            c_skip = sd ** 2 / (sig ** 2 + sd ** 2)
            c_out = sig * sd / jnp.sqrt(sig ** 2 + sd ** 2)
            return ((den - c_skip * xt) / c_out).reshape(x.shape)
        xf, z, v, a, s = _posterior(params, x, *alpha_sigma(t))
        eps = s * (z / v) @ params["u"].T
        x0 = (xf - s * eps) / a
        out = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s}[kind]
        return out.reshape(x.shape)

    return diffusion.Network(apply, prediction=kind)


NETS = {kind: gaussian_net(kind, vp_alpha_sigma) for kind in diffusion.PREDICTIONS}
DISCRETE_NET = gaussian_net("eps", discrete_alpha_sigma)

# steps at which each solver's error is far below the Monte Carlo error of the moments
CONVERGED = {"euler": 400, "heun": 60, "rk4": 20, "ddim": 1000, "dpm_solver_1": 1000,
             "dpm_solver_2": 60, "dpm_solver_3": 15, "dpm_solver_pp_2m": 60,
             "dpm_solver_pp_2s": 60, "dpm_solver_pp_3m": 30, "unipc_2": 40, "unipc_3": 20,
             "edm_heun": 100, "li_accelerated": 60}


def check_moments(x, mean, var):
    """Per-coordinate sample means and variances within Z standard errors: sqrt(var/n) and
    sqrt(2/n) var (Gaussian samples)."""
    x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    n = x.shape[0]
    assert_within(x.mean(0), np.sqrt(var / n), mean, what="mean")
    assert_within(x.var(0), se_var(var, n), var, what="variance")


def marginal(alpha_sigma, t):
    """Per-coordinate mean and variance of p_t (t: the network's time input)."""
    a, s = (float(v) for v in alpha_sigma(jnp.asarray(t, jnp.float32)))
    return a * MU, a ** 2 * np.diag(COV) + s ** 2


# ------------------------------------------------------------------- shapes and solvers

@pytest.mark.parametrize("solver", diffusion.ODE_SOLVERS)
def test_image_shaped_gaussian_moments_for_every_ode_solver(solver):
    """sample(..., shape=(4, 4, 2)) with the exact batched eps-network: per-pixel means and
    variances match p_{t_min} = N(alpha mu, alpha^2 Sigma + sigma^2 I) within 5 SE (the
    N(0, I) prior's mismatch with p_1, alpha_1 = 0.0066, moves a mean by at most 0.6 SE:
    pushed through the exact flow; the step counts keep each solver's bias below 0.5 SE)."""
    x = diffusion.sample(jax.random.key(0), VP, NETS["eps"], N_SAMPLES, shape=SHAPE,
                         params=PARAMS, solver=solver, num_steps=CONVERGED[solver], t_min=T_MIN)
    assert x.shape == (N_SAMPLES,) + SHAPE and x.dtype == jnp.float32
    check_moments(x, *marginal(vp_alpha_sigma, T_MIN))


def test_the_event_shape_is_only_a_view():
    """The same model on (n, 4, 4, 2) and on the flattened (n, 32) gives the same draws: a
    batched Network, and a per-point score(x, t) (vmapped over points of shape (4, 4, 2)),
    under the predictor-corrector sampler, whose step size uses each point's norm over all
    its event axes (float32 round-off: measured 1.4e-6; a norm over the last axis only
    differs by 0.02)."""
    key = jax.random.key(8)
    x_T = VP.prior_sample(jax.random.key(9), (64,) + SHAPE)
    flat_net = diffusion.Network(lambda p, x, t, c: NETS["eps"].apply_fn(
        p, x.reshape((-1,) + SHAPE), t, c).reshape(x.shape))
    exact = diffusion.scores.gaussian(VP, MU, COV)

    def point_score(x, t):
        return exact(x.reshape(-1), t).reshape(x.shape)

    def run(x, model, **kw):
        return np.asarray(diffusion.solve_sde(key, x, VP, model, solver="pc", num_steps=10,
                                              t_min=T_MIN, **kw)).reshape(64, -1)

    flat = run(x_T.reshape(64, -1), flat_net, params=PARAMS)
    np.testing.assert_allclose(run(x_T, NETS["eps"], params=PARAMS), flat, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(x_T, point_score), flat, rtol=1e-5, atol=1e-5)


def test_five_parameterisations_of_one_network_give_the_same_samples():
    """The exact network written as an eps-, x0-, v-, score- and EDM-predictor (EDM's raw F
    with c_skip, c_out, c_in, c_noise, sigma_data 0.5) gives the same samples to round-off
    (float64, where U is orthogonal to 1e-15): each conversion to eps is exact. Every solver
    reads the model through that one eps, so one solver checks them all. Measured: ~1e-14
    against |x| ~ 5 (EDM: a few ulps more from sigma = exp(4 c_noise))."""
    with jax.enable_x64(True):
        params = gaussian_params(jnp.float64)
        x_T = VP.prior_sample(jax.random.key(1), (64,) + SHAPE, jnp.float64)

        def run(net):
            return np.asarray(diffusion.solve_ode(x_T, VP, net, params=params, num_steps=8,
                                                  solver="dpm_solver_pp_2m", t_min=T_MIN))

        ref = run(NETS["eps"])
        assert ref.shape == (64,) + SHAPE
        for kind in ("x0", "v", "score", "edm"):
            np.testing.assert_allclose(run(NETS[kind]), ref, rtol=0, atol=1e-11, err_msg=kind)


# ---------------------------------------------------------------- conditions and guidance

# two classes with diagonal covariances; label 2 is the null condition, whose law is the
# Gaussian with the two-class mixture's mean and variance (the exact unconditional law is
# the mixture, whose eps is not linear in x; a Gaussian null branch keeps the guided eps
# linear and so its law computable)
CLASS_MEANS = np.array([[1.5, -1.0, 0.5], [-1.0, 0.5, 2.0]])
CLASS_VARS = np.array([[0.3, 1.0, 0.5], [0.8, 0.2, 1.2]])
NULL = 2
_MEANS = np.vstack([CLASS_MEANS, CLASS_MEANS.mean(0)])
_VARS = np.vstack([CLASS_VARS, CLASS_VARS.mean(0) + np.diff(CLASS_MEANS, axis=0) ** 2 / 4])
COND_PARAMS = {"mean": jnp.asarray(_MEANS, jnp.float32), "var": jnp.asarray(_VARS, jnp.float32)}
LABELS = jnp.arange(N_SAMPLES) % 2
GUIDED = {"solver": "dpm_solver_3", "num_steps": 15, "t_min": T_MIN}


def cond_apply(params, x, t, cond):
    """Exact eps of class ``cond`` (labels (n,); None: the null label)."""
    label = NULL if cond is None else cond
    a, s = (v[:, None] for v in vp_alpha_sigma(t))
    m, v = params["mean"][label], params["var"][label]
    return s * (x - a * m) / (a ** 2 * v + s ** 2)


COND_NET = diffusion.Network(cond_apply)


def per_class(x):
    x = np.asarray(x)
    return [x[np.asarray(LABELS) == k] for k in (0, 1)]


def test_conditional_samples_follow_their_class():
    """With cond=labels each sample's law is its class's p_{t_min}, within 5 SE."""
    x = diffusion.sample(jax.random.key(3), VP, COND_NET, N_SAMPLES, dim=3, params=COND_PARAMS,
                         cond=LABELS, **GUIDED)
    a, s = (float(v) for v in vp_alpha_sigma(jnp.asarray(T_MIN)))
    for k, xk in enumerate(per_class(x)):
        check_moments(xk, a * CLASS_MEANS[k], a ** 2 * CLASS_VARS[k] + s ** 2)


def test_guidance_scale_one_is_the_conditional_model():
    """w = 1: pred(null) + 1 (pred(cond) - pred(null)) = pred(cond), up to float32 round-off
    (measured max difference 5e-7 at |x| ~ 6)."""
    key = jax.random.key(3)
    cond = diffusion.sample(key, VP, COND_NET, N_SAMPLES, dim=3, params=COND_PARAMS,
                            cond=LABELS, **GUIDED)
    guided = diffusion.sample(key, VP, COND_NET, N_SAMPLES, dim=3, params=COND_PARAMS,
                              cond=LABELS, null_cond=NULL, guidance_scale=1.0, **GUIDED)
    np.testing.assert_allclose(np.asarray(guided), np.asarray(cond), rtol=0, atol=1e-5)


def guided_law(w, k):
    """Exact law of the guided PF-ODE from the prior N(0, 1) at t = 1 to T_MIN, per coordinate.

    With eps_j(x, t) = sigma (x - alpha m_j) / V_j, V_j = alpha^2 v_j + sigma^2, the guided
    eps = (1 - w) eps_null + w eps_k is affine in x, and the PF-ODE
    dx/dt = f x - g^2/2 score = f x + g^2/(2 sigma) eps (f = -beta/2, g^2 = beta) is linear:
    dx/dt = A x + b with A = f + beta/2 ((1 - w)/V_null + w/V_k) and
    b = -beta/2 alpha ((1 - w) m_null/V_null + w m_k/V_k). A Gaussian stays Gaussian: the mean
    solves dm/dt = A m + b and the variance dP/dt = 2 A P, integrated here by scipy's DOP853
    at rtol 1e-11 (not by the package)."""
    def rhs(t, y):
        m, p = y[:3], y[3:]
        beta = 0.1 + 19.9 * t
        a, s = vp_alpha_sigma(t, np)
        v_null, v_k = a * a * _VARS[NULL] + s * s, a * a * _VARS[k] + s * s
        big_a = -beta / 2 + beta / 2 * ((1 - w) / v_null + w / v_k)
        b = -beta / 2 * a * ((1 - w) * _MEANS[NULL] / v_null + w * _MEANS[k] / v_k)
        return np.concatenate([big_a * m + b, 2 * big_a * p])

    sol = integrate.solve_ivp(rhs, (1.0, T_MIN), np.r_[np.zeros(3), np.ones(3)],
                              method="DOP853", rtol=1e-11, atol=1e-12)
    return sol.y[:3, -1], sol.y[3:, -1]


def test_guided_law_matches_the_linear_ode():
    """w = 3: each class's samples match the exact law of the guided PF-ODE (within 5 SE),
    and the null condition given as None (apply_fn(params, x, t, None)) is the same as the
    null label broadcast over the batch."""
    key = jax.random.key(4)
    x = diffusion.sample(key, VP, COND_NET, N_SAMPLES, dim=3, params=COND_PARAMS, cond=LABELS,
                         null_cond=NULL, guidance_scale=3.0, **GUIDED)
    for k, xk in enumerate(per_class(x)):
        mean, var = guided_law(3.0, k)
        assert np.all(np.abs(mean - CLASS_MEANS[k]) > 0.1)  # guidance moves the law
        check_moments(xk, mean, var)
    x_none = diffusion.sample(key, VP, COND_NET, N_SAMPLES, dim=3, params=COND_PARAMS,
                              cond=LABELS, guidance_scale=3.0, **GUIDED)
    np.testing.assert_allclose(np.asarray(x_none), np.asarray(x), rtol=0, atol=1e-5)


def test_params_cond_and_guidance_scale_are_traced_not_compiled_in():
    """New params, labels and guidance weights reuse the compiled sampler (its cache does not
    grow) and change the result (they are arguments, not stale constants)."""
    key = jax.random.key(5)

    def run(params, labels, w):
        return np.asarray(diffusion.sample(key, VP, COND_NET, N_SAMPLES, dim=3, params=params,
                                           cond=labels, null_cond=NULL, guidance_scale=w,
                                           **GUIDED))

    first = run(COND_PARAMS, LABELS, 2.0)
    size = solvers._sample._cache_size()
    shifted = jax.tree.map(lambda a: a + 0.5, COND_PARAMS)
    others = [run(shifted, LABELS, 2.0), run(COND_PARAMS, 1 - LABELS, 2.0),
              run(COND_PARAMS, LABELS, 2.5)]
    assert solvers._sample._cache_size() == size
    for other in others:
        assert np.max(np.abs(other - first)) > 0.1


# ------------------------------------------------------------------ discrete checkpoints

def test_discrete_schedule_reproduces_alphas_cumprod_at_every_timestep():
    """from_betas(linspace(1e-4, 0.02, 1000)): alpha_{t_n}^2 = cumprod(1 - beta)[n] at
    t_n = (n + 1)/1000 to 1e-6 (float32, the user's dtype), the network time there is the
    timestep n, and the named "linear" schedule is the same SDE."""
    n = np.arange(1000)
    t = jnp.asarray((n + 1) / 1000, jnp.float32)
    np.testing.assert_allclose(np.asarray(DISCRETE.alpha(t)) ** 2, np.cumprod(1 - BETAS),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(DISCRETE.model_time(t)), n, rtol=0, atol=1e-3)
    assert diffusion.DiscreteVPSDE.from_schedule("linear", 1000) == DISCRETE
    assert (DISCRETE.t_min, DISCRETE.t_max) == (1e-3, 1.0)


def test_named_schedules_match_their_definitions():
    """"scaled_linear": betas = linspace(sqrt(0.00085), sqrt(0.012), N)^2;
    "squaredcos_cap_v2": beta_n = min(1 - abar((n+1)/N) / abar(n/N), 0.999),
    abar(u) = cos^2((u + 0.008)/1.008 pi/2) (Nichol & Dhariwal 2021, eq. 17)."""
    num = 50
    scaled = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, num) ** 2
    u = np.arange(num + 1) / num
    abar = np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    cos_betas = np.array([min(1 - abar[i + 1] / abar[i], 0.999) for i in range(num)])
    for name, betas in (("scaled_linear", scaled), ("squaredcos_cap_v2", cos_betas)):
        sde = diffusion.DiscreteVPSDE.from_schedule(name, num)
        np.testing.assert_allclose(sde.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-12)
        with jax.enable_x64(True):
            np.testing.assert_allclose(np.asarray(sde.alpha(jnp.asarray(u[1:]))) ** 2,
                                       np.cumprod(1 - betas), rtol=1e-12)
    custom = diffusion.DiscreteVPSDE.from_schedule("scaled_linear", num, beta_start=1e-4,
                                                   beta_end=0.02)
    np.testing.assert_allclose(custom.alphas_cumprod, np.cumprod(
        1 - np.linspace(1e-2, 0.02 ** 0.5, num) ** 2), rtol=1e-12)


def test_discrete_checkpoint_samples_with_ode_and_sde_solvers():
    """The exact eps-network of the discrete checkpoint (called with timestep indices) under
    DiscreteVPSDE: DDPM's ancestral chain on the 999 integer steps, Li et al.'s accelerated
    SDE sampler (500 steps: its bias measured below 0.45 SE) and DPM-Solver++(2M) reach
    p_{t_min} (timestep 0) within 5 SE; and the
    exact Gaussian flow accepts the discrete SDE: DPM-Solver-3 from the same x_T lands on
    it (paired RMS < 1e-3, against a per-pixel SE of about 0.02)."""
    params = PARAMS
    mean, var = marginal(discrete_alpha_sigma, 0.0)
    # 500 samples: the SDE runs draw 16 000 normals a step (slow at the suite's XLA -O0)
    for solver, steps in (("ddpm", 999), ("li_accelerated_sde", 500), ("dpm_solver_pp_2m", 60)):
        x = diffusion.sample(jax.random.key(6), DISCRETE, DISCRETE_NET, 500, shape=SHAPE,
                             params=params, solver=solver, num_steps=steps)
        check_moments(x, mean, var)
    x_T = DISCRETE.prior_sample(jax.random.key(7), (256,) + SHAPE)
    x = diffusion.solve_ode(x_T, DISCRETE, DISCRETE_NET, params=params, solver="dpm_solver_3",
                            num_steps=30)
    exact = diffusion.gaussian_flow(x_T.reshape(256, -1), DISCRETE, MU, COV, 1.0, 1e-3)
    assert float(jnp.sqrt(jnp.mean((x.reshape(256, -1) - exact) ** 2))) < 1e-3


# -------------------------------------------------------------------------- bad input

def test_bad_input_names_the_argument():
    key = jax.random.key(0)
    x = jnp.zeros((4,) + SHAPE)
    score = diffusion.scores.gaussian(VP, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="prediction must be one of eps, x0, v, score, edm; "
                                         "got 'noise'"):
        diffusion.Network(cond_apply, prediction="noise")
    with pytest.raises(TypeError, match="apply_fn must be a callable"):
        diffusion.Network(None)
    with pytest.raises(TypeError, match=r"params apply to a diffusion.Network"):
        diffusion.sample(key, VP, score, 4, params=PARAMS)
    with pytest.raises(ValueError, match=r"cond must be a batch with one row per point \(4\), "
                                         r"got shape \(3,\)"):
        diffusion.solve_ode(jnp.zeros((4, 3)), VP, COND_NET, cond=jnp.zeros(3, int))
    with pytest.raises(ValueError, match="guidance_scale needs cond"):
        diffusion.solve_ode(jnp.zeros((4, 3)), VP, COND_NET, guidance_scale=2.0)
    with pytest.raises(TypeError, match="guidance_scale must be a real scalar"):
        diffusion.solve_ode(jnp.zeros((4, 3)), VP, COND_NET, cond=jnp.zeros(4, int),
                            guidance_scale=jnp.ones(2))
    with pytest.raises(ValueError, match=r"null_cond must be one row of cond"):
        diffusion.solve_ode(jnp.zeros((4, 3)), VP, COND_NET, cond=jnp.zeros(4, int),
                            null_cond=jnp.zeros(4, int), guidance_scale=2.0)
    with pytest.raises(TypeError, match=r"apply_fn must return the prediction for the batch, of "
                                        r"shape \(4, 4, 4, 2\).*got \(4, 32\)"):
        diffusion.solve_ode(x, VP, diffusion.Network(lambda p, y, t, c: y.reshape(4, -1)))
    with pytest.raises(TypeError, match=r"shape must be a tuple of ints.*got shape=8"):
        diffusion.sample(key, VP, NETS["eps"], 4, shape=8, params=PARAMS)
    with pytest.raises(ValueError, match=r"give dim or shape, not both"):
        diffusion.sample(key, VP, NETS["eps"], 4, dim=32, shape=SHAPE, params=PARAMS)
    with pytest.raises(ValueError, match=r"x_T must have shape \(num_points, d\) or "
                                         r"\(num_points, \*shape\), got shape \(2,\)"):
        diffusion.solve_ode(jnp.zeros(2), VP, NETS["eps"])
    with pytest.raises(ValueError, match="alphas_cumprod must be strictly decreasing"):
        diffusion.DiscreteVPSDE([0.9, 0.95, 0.5])
    with pytest.raises(ValueError, match=r"betas must be a 1-d array of values in \(0, 1\)"):
        diffusion.DiscreteVPSDE.from_betas([0.1, 1.5])
    with pytest.raises(ValueError, match="name must be one of linear, scaled_linear, "
                                         "squaredcos_cap_v2; got 'cosine'"):
        diffusion.DiscreteVPSDE.from_schedule("cosine")
    with pytest.raises(ValueError, match=r"t_min and t_max must lie in \[1/N, 1\]"):
        diffusion.solve_ode(x, DISCRETE, DISCRETE_NET, t_min=1e-4)

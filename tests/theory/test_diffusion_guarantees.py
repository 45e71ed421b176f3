"""Guarantees of the PF-ODE and reverse-SDE samplers, measured on Gaussian data where the
answer is exact (shared notes smc-diffusion-detail.md, part B; their measured facts stand
over the issue's wording where they disagree):

* each ODE solver's endpoint error against the closed-form flow falls at its order as the
  steps double (Euler, DDIM 1; Heun, DPM-Solver-2, DPM-Solver++(2M), Li et al. 2; DPM-Solver-3
  3; RK4 4) -- exponential integrators on log-SNR grids, where they reach their order;
* Li et al.'s accelerated deterministic sampler beats DDIM at every step count (their
  O(1/T^2) vs O(1/T));
* "DPM-Solver-2 at 20 NFE beats Euler at 100 NFE" (the issue) is false on Gaussian data and on
  the 8-Gaussian ring (notes B6); what holds, and is asserted, is that DPM-Solver-2 wins at
  equal NFE once the NFE is large enough for orders to show;
* the PF-ODE log-likelihood of Gaussian data equals the exact Gaussian log-density up to the
  RK4 error (fitted order 4) and, with the N(0, I) prior, up to the exact prior mismatch;
  Hutchinson's estimator is unbiased;
* reverse-SDE samplers: their laws on Gaussian data are Gaussian and propagated exactly here
  by an independent per-eigen-direction recursion; the samples match it (5 standard errors),
  the W2 error falls with the steps, and Li et al.'s accelerated SDE sampler is no worse than
  DDPM at every step count (notes B6: a constant, not a rate: DDPM already has KL ~ 1/K^2 on
  Gaussians, so the worst-case rate gap of the theorem cannot show here);
* teleportation (Wang & Vastola) lowers the paired error at equal NFE.

Slopes are least-squares fits of log error on log steps over 3 doublings. Tolerance on a
slope: 0.25. An order-p method must not be mistaken for order p +- 1, and the notes' reference
implementation (numpy) shows deviations up to 0.08 in this range; 0.25 is neither tuned nor
tight.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal as mvn

import diffusion
from diffusion import scores
from diffusion.solvers import SOLVER_INFO
from diffusion.verify import exact_sde_law
from mc import Z, assert_within, se_mean, se_var

SLOPE_TOL = 0.25
# the ODE solvers whose order (diffusion.solvers.SOLVER_INFO[name].order) is measured here
ORDERED = ("euler", "heun", "rk4", "ddim", "dpm_solver_2", "dpm_solver_3", "dpm_solver_pp_2m",
           "li_accelerated")
STEPS = (80, 160, 320)
T_MIN = 1e-3

# the notes' 3-d Gaussian: mean (1, -0.5, 0.3), eigenvalues (0.05, 0.5, 2), random eigenbasis
MU = np.array([1.0, -0.5, 0.3])
_Q = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
COV = _Q @ np.diag([0.05, 0.5, 2.0]) @ _Q.T


def _p_t(sde, t):
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    return a * MU, a * a * COV + s * s * np.eye(3)


def _rms(x, y):
    return float(jnp.sqrt(jnp.mean(jnp.sum((x - y) ** 2, -1))))


def _slope(steps, errors):
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def order(solver):
    """The solver's convergence order, read from the solver."""
    return SOLVER_INFO[solver].order


@pytest.fixture(scope="module")
def gaussian_errors():
    """RMS endpoint error over 200 paths (x_T from the exact p_T) against the closed-form
    flow, for every ODE solver and step count in STEPS + (10, 20, 40); float64."""
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        score = scores.gaussian(sde, MU, COV)
        m, c = _p_t(sde, sde.t_max)
        x_T = jnp.asarray(np.random.default_rng(1).multivariate_normal(m, c, 200))
        exact = diffusion.gaussian_flow(x_T, sde, MU, COV, sde.t_max, T_MIN)
        out = {}
        for solver in ORDERED:
            out[solver] = {k: _rms(diffusion.solve_ode(x_T, sde, score, solver=solver,
                                                       num_steps=k, t_min=T_MIN), exact)
                           for k in (10, 20, 40) + STEPS}
        return out


@pytest.mark.parametrize("solver", ORDERED)
def test_order_on_exact_gaussian_flow(gaussian_errors, solver):
    errs = [gaussian_errors[solver][k] for k in STEPS]
    slope = _slope(STEPS, errs)
    print(f"{solver}: errors {errs}, slope {slope:.3f}")
    assert abs(slope + order(solver)) <= SLOPE_TOL, (solver, slope, errs)


def test_li_accelerated_beats_ddim_at_every_step_count(gaussian_errors):
    """Li et al. (2024) Thm: O(1/T^2) vs DDIM's O(1/T), both 1 NFE per step."""
    for k in (10, 20, 40) + STEPS:
        assert gaussian_errors["li_accelerated"][k] < gaussian_errors["ddim"][k], k
    assert _slope(STEPS, [gaussian_errors["ddim"][k] for k in STEPS]) > \
        _slope(STEPS, [gaussian_errors["li_accelerated"][k] for k in STEPS]) + 0.5


def test_dpm_solver_2_vs_euler_at_equal_nfe(gaussian_errors):
    """True claim: at equal NFE DPM-Solver-2 (2 NFE/step) beats Euler once the NFE is large
    enough (80+ here). The issue's "DPM-Solver-2 at 20 NFE beats Euler at 100 NFE" is false
    (notes B6): order is asymptotic, and 10 log-SNR steps are not asymptotic. Asserted as
    measured so that a change in either solver that makes it true gets looked at."""
    e, d = gaussian_errors["euler"], gaussian_errors["dpm_solver_2"]
    for k in (40, 80, 160):  # DPM-2 with k steps = 2k NFE vs Euler with 2k steps
        assert d[k] < e[2 * k], (k, d[k], e[2 * k])
    assert d[10] > e[80]  # 20 NFE vs 80 NFE (the 100 NFE is further still)


# ------------------------------------------------------------------------- log-likelihood

def test_log_likelihood_matches_exact_gaussian_density():
    """With the exact log p_{t_max} as the prior, the PF-ODE log-likelihood (exact trace, RK4
    on the log-SNR grid) converges to log N(x; alpha mu, alpha^2 Sigma + sigma^2 I) at RK4's
    order 4."""
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        score = scores.gaussian(sde, MU, COV)
        log_pT = scores.gaussian_log_prob(sde, MU, COV)

        def prior(y):
            return log_pT(y, sde.t_max)

        x = jnp.asarray(np.random.default_rng(2).multivariate_normal(MU, COV, 8))
        exact = mvn(*_p_t(sde, T_MIN)).logpdf(np.asarray(x))
        errs = []
        for k in (25, 50, 100):
            lp = diffusion.log_likelihood(x, sde, score, num_steps=k, t_min=T_MIN, prior_logp=prior)
            errs.append(float(np.max(np.abs(np.asarray(lp) - exact))))
        assert abs(_slope((25, 50, 100), errs) + 4) <= SLOPE_TOL, errs


@pytest.mark.slow
def test_log_likelihood_default_prior_mismatch_is_exact():
    """With the default N(0, I) prior, the error is exactly the prior mismatch
    log N(x_T; 0, I) - log p_T(x_T) at x_T = flow(x) (closed form), here ~ 1e-2: the notes'
    "alpha_1^2 ~ 4e-5, negligible at 1e-3" misses the O(alpha_1 |mu| |x_T|) mean term."""
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        score = scores.gaussian(sde, MU, COV)
        x = jnp.asarray(np.random.default_rng(2).multivariate_normal(MU, COV, 8))
        exact = mvn(*_p_t(sde, T_MIN)).logpdf(np.asarray(x))
        lp_default = diffusion.log_likelihood(x, sde, score, num_steps=100, t_min=T_MIN)
        x_T = diffusion.gaussian_flow(x, sde, MU, COV, T_MIN, sde.t_max)
        mismatch = (mvn(np.zeros(3), np.eye(3)).logpdf(np.asarray(x_T))
                    - mvn(*_p_t(sde, sde.t_max)).logpdf(np.asarray(x_T)))
        print(np.abs(mismatch).max())
        # RK4 error at 100 steps is ~1e-7 (previous test); 1e-5 leaves room for it
        np.testing.assert_allclose(np.asarray(lp_default) - exact, mismatch, atol=1e-5)


@pytest.mark.slow
def test_hutchinson_log_likelihood_is_unbiased():
    """Hutchinson's trace estimator with Rademacher probes held along the path is unbiased:
    the mean of 2,000 one-probe estimates at one point is within 5 standard errors of the
    exact-trace value."""
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        score = scores.gaussian(sde, MU, COV)
        x = jnp.tile(jnp.asarray(MU + 0.3)[None], (2000, 1))
        exact = diffusion.log_likelihood(x[:1], sde, score, num_steps=20, t_min=T_MIN)[0]
        est = np.asarray(diffusion.log_likelihood(x, sde, score, method="hutchinson",
                                                  key=jax.random.key(0), num_steps=20,
                                                  t_min=T_MIN))
        se = se_mean(est, axis=None)
        assert se > 0
        assert abs(est.mean() - float(exact)) <= Z * se, (est.mean(), float(exact), se)


# ---------------------------------------------------------------------- reverse-SDE samplers

def _exact_sde_law(solver, sde, k, t_min=T_MIN):
    """The exact output law of `solver` with k uniform steps on the module's Gaussian, per
    eigen-direction of COV (:func:`diffusion.verify.exact_sde_law`, written from the update
    formulas independently of the solvers)."""
    return exact_sde_law(solver, sde, MU, COV, k, t_min)


def _w2_1d(m1, v1, m2, v2):
    return float(np.sqrt(np.sum((m1 - m2) ** 2 + (np.sqrt(v1) - np.sqrt(v2)) ** 2)))


@pytest.mark.parametrize("solver", [
    pytest.param("ddpm", marks=pytest.mark.slow), "li_accelerated_sde",
    pytest.param("euler_maruyama", marks=pytest.mark.slow)])
def test_sde_sampler_matches_its_exact_law(solver):
    """At k = 10 steps (where the law is far from the target, so the check discriminates) the
    sample mean and variance in each eigen-direction are within 5 standard errors of the
    exact law (n = 4000; SE sqrt(V/n) and sqrt(2/n) V)."""
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        score = scores.gaussian(sde, MU, COV)
        n, k = 4000, 10
        mean, var, tgt_mean, tgt_var, u = _exact_sde_law(solver, sde, k)
        m, c = _p_t(sde, sde.t_max)
        x_T = jnp.asarray(np.random.default_rng(3).multivariate_normal(m, c, n))
        x = np.asarray(diffusion.solve_sde(jax.random.key(4), x_T, sde, score, solver=solver,
                                           num_steps=k, t_min=T_MIN)) @ u
        assert_within(x.mean(0), np.sqrt(var / n), mean, what=f"{solver} mean")
        assert_within(x.var(0), se_var(var, n), var, what=f"{solver} variance")
        # and the exact law is far enough from the target that the target's variances would
        # fail the same check by a wide margin (so the check discriminates)
        assert np.max(np.abs(tgt_var - var) / se_var(var, n)) > 2 * Z


def test_sde_samplers_converge_and_accelerated_is_no_worse_than_ddpm():
    """Exact W2 of the output law to p_{t_min}: falls with the steps (DDPM slope ~ -1, notes
    B6) and Li et al.'s accelerated sampler is <= DDPM at every step count."""
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        ks = (20, 40, 80, 160, 320)
        w2 = {}
        for solver in ("ddpm", "li_accelerated_sde", "euler_maruyama"):
            w2[solver] = [_w2_1d(*_exact_sde_law(solver, sde, k)[:4]) for k in ks]
            assert np.all(np.diff(w2[solver]) < 0), (solver, w2[solver])
            assert abs(_slope(ks[-3:], w2[solver][-3:]) + order(solver)) <= SLOPE_TOL, \
                (solver, w2[solver])
        assert np.all(np.array(w2["li_accelerated_sde"]) <= np.array(w2["ddpm"])), w2


# --------------------------------------------------------------------------- teleportation

def _mixture(kind):
    if kind == "near_gaussian":  # notes B6: 2 components at +-0.5, variance 1
        means = np.array([[0.5, 0.0], [-0.5, 0.0]])
        covs = np.stack([np.eye(2)] * 2)
    else:  # ring of 8, radius 4, variance 0.1
        ang = 2 * np.pi * np.arange(8) / 8
        means = 4 * np.stack([np.cos(ang), np.sin(ang)], 1)
        covs = np.stack([0.1 * np.eye(2)] * 8)
    w = np.full(len(means), 1 / len(means))
    mean = w @ means
    cov = np.einsum("k,kij->ij", w, covs + np.einsum("ki,kj->kij", means, means)) - np.outer(mean, mean)
    return w, means, covs, mean, cov


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["near_gaussian", "ring"])
def test_teleportation_lowers_error_at_equal_nfe(kind):
    """Wang & Vastola: map x_T with the exact flow of the moment-matched Gaussian to the time
    of grid point `skip` of a (K+3)-step log-SNR grid, then run K DPM-Solver-2 steps; at
    equal NFE the paired RMS error against a fine RK4 reference from the same x_T is lower
    than K steps from t_max (notes B6: near-Gaussian 0.48 -> 0.15, ring 1.04 -> 0.19 at K=5)."""
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        w, means, covs, mean, cov = _mixture(kind)
        score = scores.gaussian_mixture(sde, w, means, covs)
        x_T = sde.prior_sample(jax.random.key(5), (1000, 2))
        ref = diffusion.solve_ode(x_T, sde, score, solver="rk4", num_steps=2000, t_min=T_MIN,
                                  time_grid="logsnr")
        for k in (5, 10):
            base = _rms(diffusion.solve_ode(x_T, sde, score, solver="dpm_solver_2", num_steps=k,
                                            t_min=T_MIN), ref)
            grid = np.asarray(diffusion.time_grid(sde, k + 3, "logsnr", t_min=T_MIN))
            errs = []
            for skip in (1, 2, 3):
                x_s = diffusion.teleport(x_T, sde, mean, cov, float(grid[skip]))
                errs.append(_rms(diffusion.solve_ode(x_s, sde, score, solver="dpm_solver_2",
                                                     num_steps=k, t_min=T_MIN,
                                                     t_max=float(grid[skip])), ref))
            print(kind, k, base, errs)
            assert all(e < base for e in errs), (kind, k, base, errs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["subvp", "ve", "vp_cosine"])
def test_runge_kutta_orders_on_other_sdes(name):
    """Euler / Heun / RK4 orders 1 / 2 / 4 on sub-VP, VE (notes: -1.01/-1.99/-3.89 and
    -0.97/-2.04/-4.04) and the cosine VP schedule, against the closed-form flow."""
    sde = {"subvp": diffusion.SubVPSDE(), "ve": diffusion.VESDE(),
           "vp_cosine": diffusion.VPSDE(schedule="cosine")}[name]
    with jax.enable_x64(True):
        score = scores.gaussian(sde, MU, COV)
        m, c = _p_t(sde, sde.t_max)
        x_T = jnp.asarray(np.random.default_rng(1).multivariate_normal(m, c, 200))
        exact = diffusion.gaussian_flow(x_T, sde, MU, COV, sde.t_max, T_MIN)
        for solver in ("euler", "heun", "rk4", "dpm_solver_3"):
            errs = [_rms(diffusion.solve_ode(x_T, sde, score, solver=solver, num_steps=k,
                                             t_min=T_MIN), exact) for k in STEPS]
            print(name, solver, errs, _slope(STEPS, errs))
            assert abs(_slope(STEPS, errs) + order(solver)) <= SLOPE_TOL, (name, solver, errs)


@pytest.mark.slow
def test_dpm_solver_2_vs_euler_on_the_ring_at_equal_nfe():
    """Notes B6 (ring of 8, log-SNR): DPM-2 with 25 steps (50 NFE) beats Euler with 50 and
    100 steps in paired RMS; DPM-2 with 10 steps (20 NFE) loses to Euler with 50."""
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        w, means, covs, _, _ = _mixture("ring")
        score = scores.gaussian_mixture(sde, w, means, covs)
        x_T = sde.prior_sample(jax.random.key(6), (1000, 2))
        ref = diffusion.solve_ode(x_T, sde, score, solver="rk4", num_steps=2000, t_min=T_MIN,
                                  time_grid="logsnr")
        err = lambda s, k: _rms(diffusion.solve_ode(x_T, sde, score, solver=s, num_steps=k,  # noqa: E731
                                                    t_min=T_MIN, time_grid="logsnr"), ref)
        d25, d10, e50, e100 = err("dpm_solver_2", 25), err("dpm_solver_2", 10), err("euler", 50), err("euler", 100)
        print(d25, d10, e50, e100)
        assert d25 < e50 and d25 < e100 and d10 > e50


@pytest.mark.slow
def test_dsm_training_reaches_stated_sliced_distance_on_a_mixture():
    """DSM (eps-prediction, MLP 128x128, Adam 2e-3, 4000 steps of 256, float32) on the ring of 8
    then DPM-Solver-2 (25 steps): SW_2 to fresh data below 0.6, against 1.9 for the prior
    N(0, I) and a two-sample noise floor of ~0.14 at n = 2000 (measured: 0.41), within a CPU
    budget of one minute for training and sampling together (measured 27 s on 2 loaded cores)."""
    import time

    import optax

    import samplers
    from diffusion import nets, training

    w, means, covs, _, _ = _mixture("ring")
    rng = np.random.default_rng(0)

    def draw(n):
        return (means[rng.integers(0, 8, n)] + np.sqrt(0.1) * rng.standard_normal((n, 2))).astype(np.float32)

    data, fresh = draw(5000), draw(2000)
    sde = diffusion.VPSDE()
    model = nets.mlp((128, 128))
    start = time.perf_counter()
    params = training.train_score(jax.random.key(0), data, sde, model=model, steps=4000,
                                  optimizer=optax.adam(2e-3))
    score = training.learned_score(sde, model, params)
    xs = diffusion.sample(jax.random.key(1), sde, score, 2000, solver="dpm_solver_2",
                          num_steps=25, dim=2)
    xs.block_until_ready()
    seconds = time.perf_counter() - start
    sw = float(samplers.sliced_wasserstein(jax.random.key(2), xs, jnp.asarray(fresh),
                                           num_projections=200))
    print("dsm", sw, seconds)
    assert sw < 0.6 and seconds < 60.0, (sw, seconds)


@pytest.mark.slow
def test_experiment_runner_writes_results(tmp_path):
    """`samplers diffusion` end to end on a small Gaussian: JSON, plot, NFE counts, and the
    fitted slopes of paired error vs NFE at the solvers' orders (DDIM 1 on log-SNR, Heun 2)."""
    import json

    from diffusion import experiment

    out = tmp_path / "run"
    assert experiment.main(["--target", "gaussian", "--dim", "4", "--solvers", "ddim,heun",
                            "--steps", "10,20,40", "--num-samples", "200",
                            "--reference-steps", "400", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (out / "convergence.png").exists()
    assert [r["nfe"] for r in res["results"]] == [10, 20, 40, 20, 40, 80]
    assert abs(res["slopes_paired_rms_vs_nfe"]["ddim"] + 1) <= SLOPE_TOL
    assert abs(res["slopes_paired_rms_vs_nfe"]["heun"] + 2) <= SLOPE_TOL


@pytest.mark.slow
def test_predictor_corrector_improves_on_its_predictor():
    """Song et al. 2021 (Sec. 4.2): a Langevin corrector (snr 0.16) after each DDPM predictor
    step improves the samples at equal predictor steps. Measured on the variance part of the
    squared W2, sum_k (sqrt(V_k) - sqrt(v_k))^2, at K = 10: DDPM's is exact (its law, above);
    PC's is estimated from n = 20000 samples, with a delta-method standard error
    (SE(sqrt V) = sqrt(V / 2n)). Asserted: PC's is lower by more than 5 SE."""
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        score = scores.gaussian(sde, MU, COV)
        n, k = 20_000, 10
        _, var_ddpm, _, tgt_var, u = _exact_sde_law("ddpm", sde, k)
        m, c = _p_t(sde, sde.t_max)
        x_T = jnp.asarray(np.random.default_rng(7).multivariate_normal(m, c, n))
        x = np.asarray(diffusion.solve_sde(jax.random.key(8), x_T, sde, score, solver="pc",
                                           num_steps=k, t_min=T_MIN)) @ u
        root_pc, root_tgt = np.sqrt(x.var(0)), np.sqrt(tgt_var)
        part_pc = float(np.sum((root_pc - root_tgt) ** 2))
        part_ddpm = float(np.sum((np.sqrt(var_ddpm) - root_tgt) ** 2))
        se = float(np.sqrt(np.sum((2 * (root_pc - root_tgt) * root_pc / np.sqrt(2 * n)) ** 2)))
        print("pc", part_pc, "ddpm", part_ddpm, "se", se)
        assert part_pc < part_ddpm - Z * se, (part_pc, part_ddpm, se)


@pytest.mark.slow
def test_diffrax_backend_agrees_with_our_solvers_and_the_exact_flow():
    """diffrax's fixed-step Heun is the same method as ours (the endpoints agree to 1e-6, three
    orders below Heun's own error at 40 steps); adaptive Tsit5 meets its tolerance against the
    closed-form flow (error <= 10 x rtol at rtol = atol = 1e-5; notes B6: 5.8e-6 in 15 steps)."""
    diffrax = pytest.importorskip("diffrax")
    from diffusion.diffrax_backend import solve_ode_diffrax

    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        score = scores.gaussian(sde, MU, COV)
        x_T = jnp.asarray(np.random.default_rng(1).standard_normal((50, 3)))
        exact = diffusion.gaussian_flow(x_T, sde, MU, COV, sde.t_max, sde.t_min)
        x, info = solve_ode_diffrax(x_T, sde, score, solver=diffrax.Heun(), num_steps=40)
        ours = diffusion.solve_ode(x_T, sde, score, solver="heun", num_steps=40)
        assert info["num_steps"] == 40 and info["nfe"] == 80
        assert float(jnp.max(jnp.abs(x - ours))) < 1e-6 < 1e-3 * _rms(ours, exact) * 1e3
        x, info = solve_ode_diffrax(x_T, sde, score, rtol=1e-5, atol=1e-5)
        print(info, _rms(x, exact))
        assert _rms(x, exact) <= 1e-4 and info["num_rejected"] >= 0

"""Guarantee checks of the PF-ODE and reverse-SDE samplers (``samplers verify --method
diffusion``), registered through the ``samplers.checks`` entry point
``diffusion = "diffusion.verify:checks"``.

On Gaussian data N(mu, Sigma) with the exact score every answer is exact: the PF-ODE flow map
has a closed form (:func:`diffusion.gaussian_flow`) and every reverse-SDE step is affine plus
Gaussian noise, so its output law is propagated exactly per eigen-direction of Sigma. The
data are a 3-d Gaussian: mean
(1, -0.5, 0.3), eigenvalues (0.05, 0.5, 2), here in a random eigenbasis drawn from the key;
VP linear schedule, from t_max = 1 (x_T drawn from the exact p_T) to t_min = 1e-3, float64.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samplers.verify import Check, Outcome, at_most, near

from . import scores
from .sde import VPSDE
from .solvers import SOLVER_INFO, gaussian_flow, solve_ode, solve_sde

MEAN = np.array([1.0, -0.5, 0.3])
EIGENVALUES = np.array([0.05, 0.5, 2.0])
T_MIN = 1e-3
T_START = 0.3  # where the order-3 multistep solvers' order checks start (see ode_order)
# the fitted order of an order-p method must round to p (not be taken for p - 1 or p + 1)
ORDER_TOL = 0.5


def gaussian_data(key):
    """The checks' 3-d Gaussian with a random eigenbasis: (mean, cov) in float64 numpy."""
    rot = np.linalg.qr(np.asarray(jax.random.normal(key, (3, 3)), np.float64))[0]
    return MEAN, (rot * EIGENVALUES) @ rot.T


def marginal(sde, mean, cov, t):
    """Mean and covariance of p_t = N(alpha_t mu, alpha_t^2 Sigma + sigma_t^2 I)."""
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    return a * mean, a * a * cov + s * s * np.eye(len(mean))


def draw_prior(key, sde, mean, cov, n: int):
    """n draws of x_T from the exact p_{t_max} (float64)."""
    m, c = marginal(sde, mean, cov, sde.t_max)
    z = np.asarray(jax.random.normal(key, (n, len(mean))), np.float64)
    return jnp.asarray(m + z @ np.linalg.cholesky(c).T)


def fitted_order(steps, errors) -> float:
    """Minus the least-squares slope of log error on log steps."""
    return -float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def ode_order(solver: str, paper: str, solve: Callable = solve_ode,
              t_start: float = None) -> Check:
    """A PF-ODE solver of order p (its ``SOLVER_INFO[solver].order``) has global error O(K^{-p}) in K steps ([Lu2022a],
    Thm 3.2 for DPM-Solver-k in the log-SNR step; classical Runge-Kutta theory in t; [Li2024]
    for their accelerated sampler, O(1/T^2)). Measured: the fitted order of the RMS
    endpoint error against the exact flow (:func:`diffusion.gaussian_flow`) over doubling K,
    on each solver's default grid (log-SNR for exponential integrators). Passes when it rounds
    to p (|fitted - p| <= 1/2). ``solve(x_T, sde, score, solver=, num_steps=, t_min=,
    t_max=)`` runs the solver (a broken copy makes it fail).

    ``t_start``: integrate from there (x_T carried to it by the exact flow) instead of from
    t_max = 1. The multistep and predictor-corrector solvers of order 3 need it: from t = 1
    their starting steps sit at lambda = -5, where the data prediction barely moves (its
    derivatives scale as e^{2 lambda}), and their error falls like K^-4 until K ~ 10^3
    (measured local slopes 3.6-4.2 for DPM-Solver++(3M) at K = 10-640); from t = 0.3 the
    order shows at K = 40-320."""
    order = SOLVER_INFO[solver].order

    def measure(key, full: bool) -> Outcome:
        n, steps = (1000, (80, 160, 320, 640)) if full else (64, (40, 80, 160))
        k_data, k_prior = jax.random.split(key)
        mean, cov = gaussian_data(k_data)
        with jax.enable_x64(True):
            sde = VPSDE()
            t_max = sde.t_max if t_start is None else t_start
            score = scores.gaussian(sde, mean, cov)
            x_T = gaussian_flow(draw_prior(k_prior, sde, mean, cov, n), sde, mean, cov,
                                sde.t_max, t_max)
            exact = gaussian_flow(x_T, sde, mean, cov, t_max, T_MIN)
            errors = [float(jnp.sqrt(jnp.mean(jnp.sum(
                (solve(x_T, sde, score, solver=solver, num_steps=k, t_min=T_MIN, t_max=t_max)
                 - exact) ** 2, -1)))) for k in steps]
        fitted = fitted_order(steps, errors)
        return near(fitted, order, ORDER_TOL,
                    f"fitted order of the RMS endpoint error at K = "
                    f"{', '.join(map(str, steps))}, {n} paths from t = {t_max:g}",
                    "the order rounds to p")

    return Check(solver, paper, f"global error O(K^-{order})", measure)


def exact_sde_law(solver, sde, mean_data, cov, k, t_min=T_MIN):
    """Mean and variance, per eigen-direction of ``cov``, of the output of ``solver`` with k
    uniform steps from the exact p_T (the score is affine, each step affine + Gaussian noise),
    and those of the target p_{t_min}. Written from the update formulas ([Ho2020, eq. 7]
    posterior; [Li2024] README; Euler-Maruyama), independently of the package.

    Returns ``(mean, var, target_mean, target_var, eigenvectors)``."""
    lam, u = np.linalg.eigh(cov)
    m_data = u.T @ mean_data
    ts = np.linspace(sde.t_max, t_min, k + 1)
    # VP linear in closed form (numpy): log alpha = -t^2 (b1 - b0)/4 - t b0/2
    assert isinstance(sde, VPSDE) and sde.schedule == "linear"
    db, b0 = sde.beta_max - sde.beta_min, sde.beta_min
    al = lambda t: math.exp(-0.25 * t * t * db - 0.5 * t * b0)  # noqa: E731
    sg = lambda t: math.sqrt(1.0 - al(t) ** 2)  # noqa: E731
    mean, var = al(ts[0]) * m_data, al(ts[0]) ** 2 * lam + sg(ts[0]) ** 2
    for s, t in zip(ts[:-1], ts[1:]):
        v_s = al(s) ** 2 * lam + sg(s) ** 2
        # score(x) = -(x - a_s m) / v_s = P x + q
        p, q = -1.0 / v_s, al(s) * m_data / v_s
        if solver == "ddpm":
            a_ts = al(s) / al(t)
            var_ts = sg(s) ** 2 - a_ts ** 2 * sg(t) ** 2
            c1, c2 = a_ts * sg(t) ** 2 / sg(s) ** 2, al(t) * var_ts / sg(s) ** 2
            # x0hat = (x + sg_s^2 (P x + q)) / a_s
            lin, off = c1 + c2 * (1 + sg(s) ** 2 * p) / al(s), c2 * sg(s) ** 2 * q / al(s)
            noise = var_ts * sg(t) ** 2 / sg(s) ** 2
            mean, var = lin * mean + off, lin ** 2 * var + noise
        elif solver == "li_accelerated_sde":
            a = (al(s) / al(t)) ** 2
            c2 = 0.5 * (1 - a)
            var = var + c2                       # Y+ = Y + sqrt((1-a)/2) Z
            lin = (1 + (1 - a) * p) / math.sqrt(a)
            mean, var = lin * mean + (1 - a) * q / math.sqrt(a), lin ** 2 * var + c2
        elif solver == "euler_maruyama":
            dt = s - t
            f, g2 = -0.5 * (b0 + s * db), b0 + s * db
            lin = 1 - dt * (f - g2 * p)
            mean, var = lin * mean + dt * g2 * q, lin ** 2 * var + g2 * dt
        else:
            raise ValueError(f"no exact law for solver {solver!r}")
    a, s = al(t_min), sg(t_min)
    return mean, var, a * m_data, a * a * lam + s * s, u


def sde_law(solver: str, paper: str, guarantee: str, solve: Callable = solve_sde) -> Check:
    """A reverse-SDE sampler with K = 10 uniform steps outputs, on Gaussian data with the exact
    score, exactly the Gaussian law propagated by :func:`exact_sde_law` (far from the target at
    K = 10, so the check discriminates). Measured along each eigen-direction u_i of the data's
    covariance: the sample mean of u_i.x and of (u_i.x - m_i)^2 against the exact mean m_i and
    variance s_i^2, each as a deviation in its i.i.d. standard error; the largest of the six
    must be at most 5. ``solve(key, x_T, sde, score, solver=, num_steps=, t_min=)`` runs the
    sampler (a broken copy makes it fail)."""
    k = 10

    def measure(key, full: bool) -> Outcome:
        n = 200_000 if full else 20_000
        k_data, k_prior, k_run = jax.random.split(key, 3)
        mean_data, cov = gaussian_data(k_data)
        with jax.enable_x64(True):
            sde = VPSDE()
            score = scores.gaussian(sde, mean_data, cov)
            x_T = draw_prior(k_prior, sde, mean_data, cov, n)
            x = np.asarray(solve(k_run, x_T, sde, score, solver=solver, num_steps=k,
                                 t_min=T_MIN))
            mean, var, _, tgt_var, u = exact_sde_law(solver, sde, mean_data, cov, k)
        proj = x @ u                                   # (n, d) coordinates along u_i
        sq = (proj - mean) ** 2
        z = np.concatenate([(proj.mean(0) - mean) / (proj.std(0, ddof=1) / math.sqrt(n)),
                            (sq.mean(0) - var) / (sq.std(0, ddof=1) / math.sqrt(n))])
        return at_most(np.abs(z).max(), 5.0,
                       f"largest |deviation| / SE of the mean and variance along the "
                       f"{u.shape[1]} eigen-directions from the exact law of K = {k} steps "
                       f"(output variance / target's: "
                       f"{', '.join(f'{r:.3g}' for r in var / tgt_var)}), n = {n}",
                       "5 SE, each of the six")

    return Check(solver, paper, guarantee, measure)


def checks() -> list[Check]:
    """The diffusion checks, in the table's order: one PF-ODE solver per order (and the
    accelerated sampler of [Li2024]), then the reverse-SDE samplers' exact laws."""
    return [
        ode_order("euler", "Song2021"),
        ode_order("ddim", "Lu2022a"),
        ode_order("heun", "Karras2022"),
        ode_order("dpm_solver_2", "Lu2022a"),
        ode_order("li_accelerated", "Li2024"),
        ode_order("dpm_solver_3", "Lu2022a"),
        ode_order("dpm_solver_pp_2s", "Lu2022b"),
        ode_order("dpm_solver_pp_3m", "Lu2022b", t_start=T_START),
        ode_order("unipc_2", "Zhao2023", t_start=T_START),
        ode_order("unipc_3", "Zhao2023", t_start=T_START),
        ode_order("edm_heun", "Karras2022"),
        ode_order("rk4", "Song2021"),
        sde_law("ddpm", "Ho2020", "output law = exact ancestral-sampling law"),
        sde_law("li_accelerated_sde", "Li2024", "output law = exact law of its update"),
        sde_law("euler_maruyama", "Song2021", "output law = exact law of its update"),
    ]

"""Probability-flow ODE and reverse-SDE samplers, time grids, the exact Gaussian flow map and
analytical teleportation.

Conventions. Positions are batches of shape (n, *shape) (shape (d,) for vectors, (8, 8, 1) for
small images). The model is a :class:`diffusion.Network` (a trained, batched network
``apply_fn(params, x, t, cond)``, with its ``params``, ``cond``, ``null_cond`` and
``guidance_scale`` passed as traced arguments of the compiled solver, so new values do not
recompile) or a per-point ``score(x, t)`` for one point ``x`` of shape ``shape`` and a scalar
``t`` (vmapped over the batch, called at the SDE's time t). Every solver sees one batched
noise prediction eps(x, t) = -sigma_t score(x, t) (:func:`diffusion.networks.eps_function`).
Integration runs from ``t_max`` down to ``t_min`` over ``num_steps`` grid intervals;
``num_steps`` counts steps, not score evaluations: the number of function evaluations is
``nfe(solver, num_steps)`` (2 per step for Heun, DPM-Solver-2, DPM-Solver++(2S), EDM's two
samplers and predictor-corrector, 3 for DPM-Solver-3, 4 for RK4, 1 for the others;
DPM-Solver++(3M) adds 1 for its starting step and ``denoise_final=True`` 1 for the final
denoising). Note that the reference DPM-Solver code uses ``steps`` for NFE.

The probability-flow ODE [Song2021, eq. 13] is dx/dt = f(t) x - g(t)^2/2 score(x, t).
Exponential integrators write it in the half log-SNR lambda [Lu2022a, eq. 3.4]:
x_t = (alpha_t/alpha_s) x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-lambda} eps(x_lambda) dlambda.

The step loop is a ``lax.fori_loop`` whose trip count is a traced integer and whose grid is
computed inside the loop, so one compilation serves every ``num_steps`` (reverse-mode
differentiation through the solver is therefore not supported; forward mode is).
"""
from __future__ import annotations

import functools
import math
import sys
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplers.base import as_float
from samplers.validation import check_bool, check_choice, check_finite_rows, check_int, check_mesh

from .networks import Network, check_conditions, eps_function
from .sde import SDE, VESDE, VPSDE, DiscreteVPSDE
from .scores import gaussian_data

__all__ = ["SolverInfo", "SOLVER_INFO", "ODE_SOLVERS", "SDE_SOLVERS", "SOLVERS", "X0_SOLVERS",
           "TIME_GRIDS", "DEFAULT_SOLVER", "nfe", "time_grid", "solve_ode", "solve_sde", "sample",
           "threshold_x0", "gaussian_flow", "teleport", "check_score"]


class SolverInfo(NamedTuple):
    """What a solver is, read by :func:`nfe`, the step loop and the tests (diffrax's
    ``solver.order()``).

    Attributes:
      nfe: score evaluations per step.
      order: global convergence order p: for an ODE solver the endpoint error against the
        exact flow is O(K^-p) in K steps ([Lu2022a, Thm 3.2]; [Lu2022b];
        [Zhao2023, Thm 3.3]: UniPC-p with UniC-p is p + 1, capped at 3 for UniPC-3 by its
        first step; [Li2024]: 2); for a stochastic solver the W2 error of its law on
        Gaussian data is O(K^-p). None where no rate is claimed or measured here.
      grid: the default time grid (one of :data:`TIME_GRIDS`).
      stochastic: a reverse-SDE sampler (it takes a key) rather than a PF-ODE solver.
      x0: steps with the data prediction x0 = (x - sigma_t eps)/alpha_t, which ``clip_x0=``
        and ``dynamic_threshold=`` act on.
      start_nfe: evaluations of a starting procedure, once, on top of the per-step count.
    """

    nfe: int
    order: Optional[int]
    grid: str
    stochastic: bool
    x0: bool
    start_nfe: int = 0


# every solver by name (the names ``solver=`` accepts)
SOLVER_INFO = {
    "euler": SolverInfo(1, 1, "uniform", False, False),
    "heun": SolverInfo(2, 2, "uniform", False, False),
    "rk4": SolverInfo(4, 4, "uniform", False, False),
    "ddim": SolverInfo(1, 1, "logsnr", False, False),
    "dpm_solver_1": SolverInfo(1, 1, "logsnr", False, False),
    "dpm_solver_2": SolverInfo(2, 2, "logsnr", False, False),
    "dpm_solver_3": SolverInfo(3, 3, "logsnr", False, False),
    "dpm_solver_pp_2m": SolverInfo(1, 2, "logsnr", False, True),
    "dpm_solver_pp_2s": SolverInfo(2, 2, "logsnr", False, True),
    "dpm_solver_pp_3m": SolverInfo(1, 3, "logsnr", False, True, start_nfe=1),
    "unipc_2": SolverInfo(1, 3, "logsnr", False, True),
    "unipc_3": SolverInfo(1, 3, "logsnr", False, True),
    "edm_heun": SolverInfo(2, 2, "karras", False, True),
    "li_accelerated": SolverInfo(1, 2, "logsnr", False, False),
    "euler_maruyama": SolverInfo(1, 1, "uniform", True, False),
    "ddpm": SolverInfo(1, 1, "uniform", True, True),
    "euler_ancestral": SolverInfo(1, None, "karras", True, True),
    "dpm_solver_pp_2m_sde": SolverInfo(1, None, "logsnr", True, True),
    "edm_stochastic": SolverInfo(2, None, "karras", True, True),
    "li_accelerated_sde": SolverInfo(1, 1, "uniform", True, False),
    "pc": SolverInfo(2, None, "uniform", True, False),
}
# solver options (keyword arguments of solve_sde / sample) and their defaults: EDM's churn
# [Karras2022, Algorithm 2] with the settings of their ImageNet-64 model
_OPTIONS = {"edm_stochastic": {"S_churn": 40.0, "S_tmin": 0.05, "S_tmax": 50.0,
                               "S_noise": 1.003}}
PC_SNR = 0.16  # score_sde's configs for the Langevin corrector
ODE_SOLVERS = tuple(k for k, v in SOLVER_INFO.items() if not v.stochastic)
SDE_SOLVERS = tuple(k for k, v in SOLVER_INFO.items() if v.stochastic)
SOLVERS = ODE_SOLVERS + SDE_SOLVERS
X0_SOLVERS = tuple(k for k, v in SOLVER_INFO.items() if v.x0)
TIME_GRIDS = ("uniform", "logsnr", "karras")
KARRAS_RHO = 7.0


def nfe(solver: str, num_steps: int, denoise_final: bool = False) -> int:
    """Number of score evaluations of ``num_steps`` steps of ``solver`` (plus the final
    denoising evaluation with ``denoise_final=True``)."""
    _check_solver(solver, SOLVERS)
    info = SOLVER_INFO[solver]
    return info.nfe * int(num_steps) + info.start_nfe + bool(denoise_final)


# ----------------------------------------------------------------------------- validation

def _check_solver(solver, valid):
    check_choice("solver", solver, valid)


def _check_sde(sde):
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a diffusion SDE (VPSDE, SubVPSDE, VESDE, DiscreteVPSDE), "
                        f"got {sde!r}")


def _check_num_steps(num_steps):
    check_int("num_steps", num_steps)


def _check_times(sde, t_min, t_max):
    t_min = sde.t_min if t_min is None else float(t_min)
    t_max = sde.t_max if t_max is None else float(t_max)
    if not (math.isfinite(t_min) and math.isfinite(t_max)):
        raise ValueError(f"t_min and t_max must be finite, got t_min={t_min!r}, t_max={t_max!r}")
    if t_min >= t_max:
        raise ValueError(f"t_min must be < t_max, got t_min={t_min!r} >= t_max={t_max!r}")
    lo = 0.0 if isinstance(sde, VESDE) else None
    if lo is None and t_min <= 0:
        raise ValueError(f"t_min must be > 0 for {type(sde).__name__} (the log-SNR is infinite "
                         f"at t = 0), got t_min={t_min!r}")
    if lo is not None and t_min < lo:
        raise ValueError(f"t_min must be >= 0, got t_min={t_min!r}")
    if isinstance(sde, VPSDE) and sde.schedule == "cosine" and t_max >= 1.0:
        raise ValueError(f"t_max must be < 1 for the cosine schedule, got t_max={t_max!r}")
    if isinstance(sde, DiscreteVPSDE) and not 1.0 / sde.num_timesteps <= t_min < t_max <= 1.0:
        raise ValueError(f"t_min and t_max must lie in [1/N, 1] = [{1.0 / sde.num_timesteps!r}, "
                         f"1] for a DiscreteVPSDE (timesteps 0 .. N-1), got t_min={t_min!r}, "
                         f"t_max={t_max!r}")
    return t_min, t_max


def check_score(score: Callable, dim, dtype=jnp.float32) -> None:
    """Raise TypeError unless ``score(x, t)`` maps one point and a scalar t to an array of
    the point's shape (checked on shapes only, with ``jax.eval_shape``). ``dim``: the
    point's dimension d, or its event shape (a tuple, e.g. (8, 8, 1))."""
    if not callable(score):
        raise TypeError(f"score must be a callable score(x, t), got {score!r}")
    shape = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    try:
        out = jax.eval_shape(score, jax.ShapeDtypeStruct(shape, dtype),
                             jax.ShapeDtypeStruct((), dtype))
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise TypeError(f"score(x, t) failed on x of shape {shape} and scalar t: {err}") from err
    got = getattr(out, "shape", None)
    if got != shape:
        raise TypeError(f"score must return an array of shape {shape} for x of shape {shape} "
                        f"(one point; the solvers vmap over points), got {got}")


def _check_positions(name, x, flat=True):
    """A batch (n, d) (``flat``) or (n, *shape): integer/bool entries converted to the
    default float dtype; a concrete batch with a NaN or infinite row is refused (ValueError
    naming the rows), since the solvers would carry it to a NaN result silently."""
    x = as_float(jnp.asarray(x))
    if (x.ndim != 2) if flat else (x.ndim < 2):
        expected = "(num_points, d)" + ("" if flat else " or (num_points, *shape)")
        raise ValueError(f"{name} must have shape {expected}, got shape {x.shape}")
    check_finite_rows(name, x)
    return x


def _event_shape(dim, shape, model):
    """The event shape of :func:`sample`: ``shape`` (a tuple of positive ints), or ``dim``
    (an int d, for shape (d,)), or the exact score's ``dim``."""
    if dim is not None and shape is not None:
        raise ValueError(f"give dim or shape, not both; got dim={dim!r}, shape={shape!r}")
    if shape is None:
        dim = getattr(model, "dim", None) if dim is None else dim
        if dim is None:
            raise ValueError("dim must be given (or shape=, the event shape): the model does "
                             "not carry its dimension")
        if isinstance(dim, (tuple, list)):
            raise TypeError(f"dim must be an int d (samples of shape (num_samples, d)); for "
                            f"image-shaped events pass shape=, got dim={dim!r}")
        return (check_int("dim", dim),)
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in shape):
        raise TypeError(f"shape must be a tuple of ints (the event shape, e.g. (8, 8, 1)), got "
                        f"shape={shape!r}")
    if not shape or min(shape) < 1:
        raise ValueError(f"shape must be a non-empty tuple of integers >= 1, got shape={shape!r}")
    return tuple(int(k) for k in shape)


def _resolve_grid(solver, time_grid):
    if time_grid is None:
        return SOLVER_INFO[solver].grid, None
    if isinstance(time_grid, str):
        if time_grid not in TIME_GRIDS:
            raise ValueError(f"time_grid must be one of {', '.join(TIME_GRIDS)} or an array of "
                             f"decreasing times; got {time_grid!r}")
        return time_grid, None
    ts = np.asarray(time_grid, dtype=np.float64)
    if ts.ndim != 1 or ts.shape[0] < 2 or not np.all(np.diff(ts) < 0):
        raise ValueError("time_grid given as an array must be 1-d, of length >= 2 and strictly "
                         f"decreasing, got {time_grid!r}")
    return "custom", ts


# ------------------------------------------------------------------------------ time grids

def _grid_time(sde, grid, ts, t_max, t_min, num_steps, i):
    """Time of grid point i (0 <= i <= num_steps), from t_max (i = 0) down to t_min."""
    if grid == "custom":
        return ts[i]
    u = i / num_steps
    if grid == "uniform":
        t = t_max + u * (t_min - t_max)
    elif grid == "logsnr":
        lmax, lmin = sde.log_snr(t_max), sde.log_snr(t_min)
        t = sde.t_of_log_snr(lmax + u * (lmin - lmax))
    elif grid == "karras":  # [Karras2022, eq. 5], in the EDM noise level sigma/alpha
        hi = jnp.exp(-sde.log_snr(t_max) / KARRAS_RHO)
        lo = jnp.exp(-sde.log_snr(t_min) / KARRAS_RHO)
        t = sde.t_of_log_snr(-KARRAS_RHO * jnp.log(hi + u * (lo - hi)))
    else:  # pragma: no cover - validated before
        raise ValueError(grid)
    return jnp.where(i == 0, t_max, jnp.where(i == num_steps, t_min, t))


def time_grid(sde, num_steps: int, kind: str = "uniform", *, t_min=None, t_max=None):
    """The ``num_steps + 1`` grid times from t_max down to t_min: ``"uniform"`` in t,
    ``"logsnr"`` uniform in lambda_t [Lu2022a, Sec. 3.3], ``"karras"``
    ([Karras2022, eq. 5], rho = 7, in the noise level exp(-lambda_t))."""
    _check_sde(sde)
    _check_num_steps(num_steps)
    t_min, t_max = _check_times(sde, t_min, t_max)
    check_choice("kind", kind, TIME_GRIDS)
    i = jnp.arange(num_steps + 1)
    return _grid_time(sde, kind, None, t_max, t_min, num_steps, i)


# --------------------------------------------------------------------------------- steps

class _Ctx(NamedTuple):
    sde: object
    eps: Callable  # batched noise prediction: (n, *shape), scalar t -> (n, *shape)
    x0: Callable   # data prediction (x - sigma eps)/alpha, clipped or thresholded if asked
    num_steps: jax.Array
    t_max: jax.Array
    options: dict  # the solver's options (_OPTIONS), traced


def _score(c, x, t):
    return -c.eps(x, t) / c.sde.sigma(t)


def _vel(c, x, t):
    return c.sde.pf_ode_drift(x, t, _score(c, x, t))


def _euler(c, x, s, t, carry, i, key):
    return x + (t - s) * _vel(c, x, s), carry


def _heun(c, x, s, t, carry, i, key):
    k1 = _vel(c, x, s)
    k2 = _vel(c, x + (t - s) * k1, t)
    return x + 0.5 * (t - s) * (k1 + k2), carry


def _rk4(c, x, s, t, carry, i, key):
    dt = t - s
    m = s + 0.5 * dt
    k1 = _vel(c, x, s)
    k2 = _vel(c, x + 0.5 * dt * k1, m)
    k3 = _vel(c, x + 0.5 * dt * k2, m)
    k4 = _vel(c, x + dt * k3, t)
    return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), carry


def _ddim(c, x, s, t, carry, i, key):
    """DDIM = DPM-Solver-1 [Lu2022a, eq. 3.7]: x_t = (a_t/a_s) x - s_t (e^h - 1) eps."""
    sde = c.sde
    h = sde.log_snr(t) - sde.log_snr(s)
    x_t = sde.alpha(t) / sde.alpha(s) * x - sde.sigma(t) * jnp.expm1(h) * c.eps(x, s)
    return x_t, carry


def _dpm2(c, x, s, t, carry, i, key):
    """DPM-Solver-2 [Lu2022a, Algorithm 1] with r1 = 1/2."""
    sde = c.sde
    ls = sde.log_snr(s)
    h = sde.log_snr(t) - ls
    s1 = sde.t_of_log_snr(ls + 0.5 * h)
    a_s = sde.alpha(s)
    eps_s = c.eps(x, s)
    u = sde.alpha(s1) / a_s * x - sde.sigma(s1) * jnp.expm1(0.5 * h) * eps_s
    x_t = sde.alpha(t) / a_s * x - sde.sigma(t) * jnp.expm1(h) * c.eps(u, s1)
    return x_t, carry


def _dpm3(c, x, s, t, carry, i, key):
    """DPM-Solver-3 [Lu2022a, Algorithm 2] with r1 = 1/3, r2 = 2/3."""
    sde = c.sde
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    ls = sde.log_snr(s)
    h = sde.log_snr(t) - ls
    s1 = sde.t_of_log_snr(ls + r1 * h)
    s2 = sde.t_of_log_snr(ls + r2 * h)
    a_s = sde.alpha(s)
    eps_s = c.eps(x, s)
    u1 = sde.alpha(s1) / a_s * x - sde.sigma(s1) * jnp.expm1(r1 * h) * eps_s
    d1 = c.eps(u1, s1) - eps_s
    e2 = jnp.expm1(r2 * h)
    u2 = (sde.alpha(s2) / a_s * x - sde.sigma(s2) * e2 * eps_s
          - sde.sigma(s2) * (r2 / r1) * (e2 / (r2 * h) - 1.0) * d1)
    d2 = c.eps(u2, s2) - eps_s
    e = jnp.expm1(h)
    x_t = (sde.alpha(t) / a_s * x - sde.sigma(t) * e * eps_s
           - sde.sigma(t) / r2 * (e / h - 1.0) * d2)
    return x_t, carry


# Data prediction. With D(lambda) = x0(x_lambda, t_lambda), the PF-ODE's exact solution from
# s to t (h = lambda_t - lambda_s > 0) is [Lu2022b,
# Sec. 4] (variation of constants in lambda)
#   x_t = (sigma_t/sigma_s) x_s + alpha_t int_0^h e^{-(h-u)} D(lambda_s + u) du,
# and a polynomial D(lambda_s + u) = sum_k D^(k) u^k/k! integrates to sum_k I_k(h) D^(k) with
# I_k(h) = int_0^h e^{-(h-u)} u^k/k! du (I_0 = 1 - e^{-h}, I_k = h^k/k! - I_{k-1}).

def _exp_integrals(h, kmax):
    """[I_0(h), ..., I_kmax(h)]: the recursion for h >= 1, the series
    I_k = sum_j (-1)^j h^(k+1+j)/(k+1+j)! below (the recursion cancels there: I_k ~ h^(k+1))."""
    small = jnp.minimum(h, 1.0)
    out, rec = [], -jnp.expm1(-h)
    for k in range(kmax + 1):
        series = sum((-1) ** j * small ** (k + 1 + j) / float(math.factorial(k + 1 + j))
                     for j in range(16))
        if k:
            rec = h ** k / float(math.factorial(k)) - rec
        out.append(jnp.where(h < 1.0, series, rec))
    return out


def _first_order_pp(sde, x, s, t, d_s):
    """DPM-Solver++(1) from s to t with the data prediction d_s: the exact solution for a
    constant D, (sigma_t/sigma_s) x - alpha_t (e^{-h} - 1) d_s."""
    h = sde.log_snr(t) - sde.log_snr(s)
    return sde.sigma(t) / sde.sigma(s) * x - sde.alpha(t) * jnp.expm1(-h) * d_s


def _dbar_2m(d_s, d_prev, h, h_prev, i):
    """DPM-Solver++(2M)'s combined data prediction [Lu2022b, Algorithm 2]:
    (1 + 1/(2r)) D_s - 1/(2r) D_prev with r = h_prev / h; D_s on the first step."""
    r = h_prev / h
    return jnp.where(i == 0, d_s, (1.0 + 0.5 / r) * d_s - (0.5 / r) * d_prev)


def _dpmpp2m(c, x, s, t, carry, i, key):
    """DPM-Solver++(2M) [Lu2022b, Algorithm 2]: multistep, data prediction
    D = (x - sigma eps)/alpha, x_t = (s_t/s_s) x - a_t (e^{-h} - 1) Dbar."""
    d_prev, h_prev = carry
    h = c.sde.log_snr(t) - c.sde.log_snr(s)
    d_s = c.x0(x, s)
    return _first_order_pp(c.sde, x, s, t, _dbar_2m(d_s, d_prev, h, h_prev, i)), (d_s, h)


def _two_s(c, x, s, t, d_s):
    """DPM-Solver++(2S) from s to t given the data prediction d_s at (x, s)."""
    sde = c.sde
    s1 = sde.t_of_log_snr(0.5 * (sde.log_snr(s) + sde.log_snr(t)))
    return _first_order_pp(sde, x, s, t, c.x0(_first_order_pp(sde, x, s, s1, d_s), s1))


def _dpmpp2s(c, x, s, t, carry, i, key):
    """DPM-Solver++(2S) [Lu2022b, Algorithm 1] with r = 1/2: a first-order step to the
    half-way log-SNR point s1, then the step from s with the data prediction there
    ((1 - 1/(2r)) D_s + 1/(2r) D_s1 = D_s1 at r = 1/2). 2 NFE per step."""
    return _two_s(c, x, s, t, c.x0(x, s)), carry


def _dpmpp3m(c, x, s, t, carry, i, key):
    """DPM-Solver++(3M) [Lu2022b, the multistep method of order 3]: D interpolated by
    the quadratic through the last three data predictions (nodes u = 0, -h1, -h1 - h2 in
    u = lambda - lambda_s) and integrated exactly: x_t = (sigma_t/sigma_s) x + alpha_t
    (I_0 D_s + I_1 P'(0) + I_2 P''(0)), with Newton's divided differences
    P'(0) = f[0, -h1] + h1 f[0, -h1, -h1-h2], P''(0) = 2 f[0, -h1, -h1-h2]; the line through
    two points on the second step. An order-3 multistep method needs starting values with
    error O(h^3): the first step is DPM-Solver++(2S), one more evaluation (a first-order
    start, local error O(h^2), makes the method order 2: measured slope 2.00 from t = 0.3).
    1 NFE per step, plus 1."""
    sde = c.sde
    d_p1, d_p2, h1, h2 = carry
    h = sde.log_snr(t) - sde.log_snr(s)
    d_s = c.x0(x, s)

    def multistep(_):
        f01 = (d_s - d_p1) / h1
        f012 = (f01 - (d_p1 - d_p2) / h2) / (h1 + h2)
        dd1 = f01 + jnp.where(i >= 2, h1, 0.0) * f012
        dd2 = jnp.where(i >= 2, 2.0 * f012, 0.0)
        i0, i1, i2 = _exp_integrals(h, 2)
        return sde.sigma(t) / sde.sigma(s) * x + sde.alpha(t) * (i0 * d_s + i1 * dd1 + i2 * dd2)

    x_t = jax.lax.cond(i == 0, lambda _: _two_s(c, x, s, t, d_s), multistep, None)
    return x_t, (d_s, d_p1, h, h1)


def _unipc_update(sde, x_b, t_b, lam_b, t, d_b, points, order):
    """One UniP / UniC update [Zhao2023, Sec. 3] (in its
    data-prediction form) from the node t_b (state x_b, half log-SNR lam_b, data prediction
    d_b) to t, with h = lambda_t - lam_b and the points (lambda_m, D_m), r_m = (lambda_m -
    lam_b)/h:
    x_t = (sigma_t/sigma_b) x_b + alpha_t [I_0 d_b + B(h) sum_m a_m (D_m - d_b)/r_m],
    where the a_m solve sum_m a_m r_m^(k-1) = k! I_k(h) / (h^k B(h)), k = 1 .. q (the Taylor
    terms of the exact solution matched up to D^(q)) for the first q points. One point: a_1 =
    1/2, the h -> 0 limit of its equation, with bh2's B(h) = 1 - e^{-h} (the paper's
    B(h) = e^h - 1 in noise prediction); more points: solved exactly (B cancels). ``order``
    (traced, 1 .. len(points) + 1) is q + 1, order 1 being DPM-Solver++(1)."""
    h = sde.log_snr(t) - lam_b
    ints = _exp_integrals(h, len(points))
    g = jnp.stack([float(math.factorial(k)) * ints[k] / h ** k for k in range(1, len(points) + 1)])
    r = jnp.stack([(lam_m - lam_b) / h for lam_m, _ in points])
    diffs = [(d_m - d_b) / r[m] for m, (_, d_m) in enumerate(points)]
    out = ints[0] * d_b
    for q in range(1, len(points) + 1):
        if q == 1:
            corr = ints[0] * 0.5 * diffs[0]
        else:
            a = jnp.linalg.solve(r[None, :q] ** jnp.arange(q)[:, None], g[:q])
            corr = sum(a[m] * diffs[m] for m in range(q))
        out = out + jnp.where(order == q + 1, corr, 0.0)
    return sde.sigma(t) / sde.sigma(t_b) * x_b + sde.alpha(t) * out


def _unipc(p):
    """UniPC-p with B(h) = 1 - e^{-h} (bh2) ([Zhao2023, Sec. 3]: UniP-p predictor and
    UniC-p corrector; data prediction), 1 NFE per step: the evaluation D_i at the predicted
    x~_i serves both the corrector of the step that reached it (x_i^c = UniC from x_{i-1}^c
    with the points D_i (r = 1), D_{i-2}, ...) and the predictor of the next step (from x_i^c
    with the points D_{i-1}, ...). Orders ramp up 1, 2, ... to p over the first steps; the
    last step is not corrected (that would need one more evaluation)."""

    def step(c, x, s, t, carry, i, key):
        sde = c.sde
        # corrected state, time and log-SNR of the last node; its data prediction and the
        # p - 1 before it (newest first), with their log-SNRs
        x_prev, t_prev, lam_prev, ds, lams = carry
        d_s = c.x0(x, s)
        lam_s = sde.log_snr(s)
        older = list(zip(lams[1:], ds[1:]))
        x_c = _unipc_update(sde, x_prev, t_prev, lam_prev, s, ds[0], [(lam_s, d_s)] + older,
                            jnp.minimum(p, i) + 1)
        x_c = jnp.where(i == 0, x, x_c)
        x_t = _unipc_update(sde, x_c, s, lam_s, t, d_s, list(zip(lams, ds))[:p - 1],
                            jnp.minimum(p, i + 1))
        return x_t, (x_c, s, lam_s, (d_s,) + ds[:-1], (lam_s,) + lams[:-1])

    return step


def _edm_heun_from(c, y, sg, t_from, t):
    """One step of Heun's method [Karras2022, Algorithm 1, lines 4-8] for
    dy/dsigma = (y - D(y; sigma))/sigma in EDM's scale y = x/alpha, sigma = sigma_t/alpha_t,
    from (y, sg) at time t_from to time t; returns x_t = alpha_t y_t."""
    sde = c.sde
    a_t = sde.alpha(t)
    sg_t = sde.sigma(t) / a_t
    d = (y - c.x0(sde.alpha(t_from) * y, t_from)) / sg
    y_e = y + (sg_t - sg) * d
    d_t = (y_e - c.x0(a_t * y_e, t)) / sg_t
    return a_t * (y + (sg_t - sg) * 0.5 * (d + d_t))


def _edm_heun(c, x, s, t, carry, i, key):
    """EDM's deterministic sampler [Karras2022, Algorithm 1]: Heun's method in the
    noise level sigma = sigma_t/alpha_t on the scale x/alpha_t (its Euler step is DDIM), on
    the Karras grid (eq. 5, rho = 7) by default. Every step is a Heun step: the grid ends at
    t_min > 0 (``denoise_final=True`` is the paper's last step to sigma = 0, an Euler step
    that returns D). 2 NFE per step."""
    a_s = c.sde.alpha(s)
    return _edm_heun_from(c, x / a_s, c.sde.sigma(s) / a_s, s, t), carry


def _edm_stochastic(c, x, s, t, carry, i, key):
    """EDM's stochastic sampler [Karras2022, Algorithm 2]: with
    gamma = min(S_churn/N, sqrt(2) - 1) where S_tmin <= sigma_s <= S_tmax (else 0), raise the
    noise level to sigma^ = (1 + gamma) sigma_s by adding N(0, S_noise^2 (sigma^2 - sigma_s^2))
    noise to y = x/alpha_s, then take the Heun step of Algorithm 1 from sigma^ to sigma_t.
    sigma^ is capped at the SDE's noise level at t_max (the SDE, and the network, end
    there). 2 NFE per step."""
    sde = c.sde
    o = c.options
    a_s = sde.alpha(s)
    sg = sde.sigma(s) / a_s
    sg_max = sde.sigma(c.t_max) / sde.alpha(c.t_max)
    gamma = jnp.where((o["S_tmin"] <= sg) & (sg <= o["S_tmax"]),
                      jnp.minimum(o["S_churn"] / c.num_steps, math.sqrt(2.0) - 1.0), 0.0)
    sg_hat = jnp.minimum((1.0 + gamma) * sg, jnp.maximum(sg_max, sg))
    churned = sg_hat > sg
    t_hat = jnp.where(churned, sde.t_of_log_snr(-jnp.log(sg_hat)), s).astype(s.dtype)
    noise = jax.random.normal(key, x.shape, x.dtype)
    y = x / a_s + o["S_noise"] * jnp.sqrt(jnp.maximum(sg_hat ** 2 - sg ** 2, 0.0)) * noise
    return _edm_heun_from(c, y, jnp.where(churned, sg_hat, sg), t_hat, t), carry


def _dpmpp2m_sde(c, x, s, t, carry, i, key):
    """DPM-Solver++(2M) for the reverse SDE (the SDE counterpart of [Lu2022b],
    Algorithm 2). In data prediction the reverse SDE is dx = [(dlog alpha/dlambda - 2) x +
    2 alpha D] dlambda + noise, whose exact solution from s to t is
    x_t = (sigma_t/sigma_s) e^{-h} x_s + alpha_t int_0^h 2 e^{-2(h-u)} D du
    + sigma_t sqrt(1 - e^{-2h}) z; with D replaced by 2M's combination Dbar this is
    x_t = (sigma_t/sigma_s) e^{-h} x + alpha_t (1 - e^{-2h}) Dbar + sigma_t sqrt(1 - e^{-2h}) z
    (its first-order member, Dbar = D_s, is the DDPM step). 1 NFE per step."""
    sde = c.sde
    d_prev, h_prev = carry
    h = sde.log_snr(t) - sde.log_snr(s)
    d_s = c.x0(x, s)
    j0 = -jnp.expm1(-2.0 * h)
    noise = jax.random.normal(key, x.shape, x.dtype)
    x_t = (sde.sigma(t) / sde.sigma(s) * jnp.exp(-h) * x
           + sde.alpha(t) * j0 * _dbar_2m(d_s, d_prev, h, h_prev, i)
           + sde.sigma(t) * jnp.sqrt(j0) * noise)
    return x_t, (d_s, h)


def _li_ode(c, x, s, t, carry, i, key):
    """Accelerated deterministic sampler of [Li2024], in the
    two-step form of the authors' code: DDIM plus the exact integral,
    in the DDIM variable sb = sigma/alpha = e^{-lambda}, of eps interpolated linearly in
    w = 1/(1 + sb^2) (= abar for VP) through the last two evaluations:
    x_t = DDIM(x_s) + a_t / (w_s - w_p) [w_s (sb_t - sb_s) - (atan sb_t - atan sb_s)]
    (eps_p - eps_s); plain DDIM on the first step. 1 NFE per step."""
    sde = c.sde
    first = i == 0
    eps_p, sb_p = carry
    ls, lt = sde.log_snr(s), sde.log_snr(t)
    eps_s = c.eps(x, s)
    a_t = sde.alpha(t)
    x_t = a_t / sde.alpha(s) * x - sde.sigma(t) * jnp.expm1(lt - ls) * eps_s
    sb_s, sb_t = jnp.exp(-ls), jnp.exp(-lt)
    w_s = 1.0 / (1.0 + sb_s ** 2)
    dw = (sb_p ** 2 - sb_s ** 2) / ((1.0 + sb_s ** 2) * (1.0 + sb_p ** 2))  # w_s - w_p
    bracket = w_s * (sb_t - sb_s) - (jnp.arctan(sb_t) - jnp.arctan(sb_s))
    corr = a_t * bracket / jnp.where(first, 1.0, dw) * (eps_p - eps_s)
    return x_t + jnp.where(first, 0.0, 1.0) * corr, (eps_s, sb_s)


def _euler_maruyama(c, x, s, t, carry, i, key):
    """Euler-Maruyama on the reverse SDE dx = [f x - g^2 score] dt + g dW [Song2021, eq. 6]."""
    sde = c.sde
    dt = s - t
    drift = sde.drift_coef(s) * x - sde.g2(s) * _score(c, x, s)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x - dt * drift + jnp.sqrt(sde.g2(s) * dt) * noise, carry


def _ddpm(c, x, s, t, carry, i, key):
    """DDPM ancestral step [Ho2020, eq. 7] for a general Gaussian transition: draw from
    q(x_t | x_s, x_0 = D(x_s)) with the data prediction D = (x - sigma_s eps)/alpha_s.

    It is also "euler_ancestral" (the ancestral Euler step in the noise level, as k-diffusion
    and diffusers take it): in EDM's scale y = x/alpha, sigma = sigma_t/alpha_t, that step
    is y_t = y + (sigma_down - sigma_s)(y - D)/sigma_s + sigma_up z with sigma_up^2 =
    sigma_t^2 (sigma_s^2 - sigma_t^2)/sigma_s^2 and sigma_down^2 = sigma_t^2 - sigma_up^2 =
    sigma_t^4/sigma_s^2, i.e. mean D + (sigma_t/sigma_s)^2 (y - D) and variance sigma_up^2:
    the posterior q(y_t | y_s, x_0 = D) of the forward process y_t = x_0 + sigma_t eps, which
    is this step divided by alpha_t. "euler_ancestral" runs it on the Karras grid."""
    sde = c.sde
    a_s, a_t, sig_s, sig_t = sde.alpha(s), sde.alpha(t), sde.sigma(s), sde.sigma(t)
    a_ts = a_s / a_t
    var_ts = sig_s ** 2 - a_ts ** 2 * sig_t ** 2
    mean = a_ts * sig_t ** 2 / sig_s ** 2 * x + a_t * var_ts / sig_s ** 2 * c.x0(x, s)
    std = jnp.sqrt(jnp.maximum(var_ts, 0.0)) * sig_t / sig_s
    return mean + std * jax.random.normal(key, x.shape, x.dtype), carry


def _li_sde(c, x, s, t, carry, i, key):
    """Accelerated stochastic sampler of [Li2024] (the README of the authors'
    repository): with a = abar_s / abar_t,
    Y+ = Y + sqrt((1-a)/2) Z+,  Y_t = (Y+ + (1-a) score(Y+, s)) / sqrt(a) + sqrt((1-a)/2) Z."""
    sde = c.sde
    a = (sde.alpha(s) / sde.alpha(t)) ** 2
    k1, k2 = jax.random.split(key)
    std = jnp.sqrt(0.5 * (1.0 - a))
    y = x + std * jax.random.normal(k1, x.shape, x.dtype)
    y = (y + (1.0 - a) * _score(c, y, s)) / jnp.sqrt(a)
    return y + std * jax.random.normal(k2, x.shape, x.dtype), carry


def _pc(c, x, s, t, carry, i, key):
    """Predictor-corrector [Song2021, Algorithm 5 for VP, 4 for VE]: a DDPM ancestral
    predictor step s -> t, then one Langevin corrector step at t,
    x <- x + e score(x, t) + sqrt(2 e) z with e = 2 a (snr |z| / |score|)^2, norms averaged
    over the batch as in the authors' code (each point's norm over all its event axes),
    a = alpha_s^2 / alpha_t^2 (the discrete alpha_i; 1 for VE) and snr = PC_SNR = 0.16."""
    k_pred, k_corr = jax.random.split(key)
    x, carry = _ddpm(c, x, s, t, carry, i, k_pred)
    g = _score(c, x, t)
    z = jax.random.normal(k_corr, x.shape, x.dtype)

    def mean_norm(a):
        return jnp.mean(jnp.linalg.norm(a.reshape(a.shape[0], -1), axis=-1))

    ratio = (mean_norm(z) / mean_norm(g)) ** 2
    e = 2.0 * (c.sde.alpha(s) / c.sde.alpha(t)) ** 2 * PC_SNR ** 2 * ratio
    return x + e * g + jnp.sqrt(2.0 * e) * z, carry


_STEPS = {"euler": _euler, "heun": _heun, "rk4": _rk4, "ddim": _ddim, "dpm_solver_1": _ddim,
          "dpm_solver_2": _dpm2, "dpm_solver_3": _dpm3, "dpm_solver_pp_2m": _dpmpp2m,
          "dpm_solver_pp_2s": _dpmpp2s, "dpm_solver_pp_3m": _dpmpp3m, "unipc_2": _unipc(2),
          "unipc_3": _unipc(3), "edm_heun": _edm_heun, "li_accelerated": _li_ode,
          "euler_maruyama": _euler_maruyama, "ddpm": _ddpm, "euler_ancestral": _ddpm,
          "dpm_solver_pp_2m_sde": _dpmpp2m_sde, "edm_stochastic": _edm_stochastic,
          "li_accelerated_sde": _li_sde, "pc": _pc}


def _init_carry(solver, x, t_max):
    """The multistep solvers' memory before the first step (unused there: each step's
    formula takes its lower-order form at i = 0, 1, ...; step sizes 1 avoid 0/0)."""
    zero, one = jnp.zeros_like(x), jnp.ones((), x.dtype)
    if solver in ("dpm_solver_pp_2m", "dpm_solver_pp_2m_sde"):
        return zero, one
    if solver == "dpm_solver_pp_3m":
        return zero, zero, one, one
    if solver == "li_accelerated":
        return zero, jnp.zeros((), x.dtype)
    if solver.startswith("unipc_"):
        p = int(solver[-1])
        lam = jnp.zeros((), x.dtype)
        # distinct dummy log-SNRs: their points are masked out, and the systems stay regular
        return x, t_max, lam + 1.0, (zero,) * p, tuple(lam - k for k in range(p))
    return ()


def _limit_x0(x0, clip, threshold):
    """x0 clipped to [lo, hi] (``clip``) or dynamically thresholded (``threshold``: the
    percentile p), or unchanged when both are None."""
    if threshold is not None:
        return threshold_x0(x0, threshold)
    if clip is not None:
        return jnp.clip(x0, clip[0], clip[1])
    return x0


def threshold_x0(x0, percentile=0.995):
    """Imagen's dynamic thresholding [Saharia2022, Sec. 2.3]: per sample, s = the
    ``percentile`` quantile of |x0| over all its entries; where s > 1, x0 is clipped to
    [-s, s] and divided by s, so it lies in [-1, 1]; a sample with s <= 1 is unchanged.
    ``x0``: a batch (n, *shape) of data predictions."""
    flat = jnp.abs(x0.reshape(x0.shape[0], -1))
    s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.0)
    s = s.reshape((-1,) + (1,) * (x0.ndim - 1)).astype(x0.dtype)
    return jnp.clip(x0, -s, s) / s


def _model_eps(sde, model, params, cond, null_cond, guidance_scale):
    """The batched eps(x, t) of a :class:`Network` or of a per-point score(x, t)."""
    if isinstance(model, Network):
        return eps_function(sde, model, params, cond, null_cond, guidance_scale)
    score = jax.vmap(model, (0, None))
    return lambda x, t: -sde.sigma(t) * score(x, t)


@functools.partial(jax.jit, static_argnames=("sde", "model", "solver", "grid",
                                             "denoise_final"))
def _integrate(x, key, ts, t_max, t_min, num_steps, params, cond, null_cond, guidance_scale,
               options, clip, threshold, *, sde, model, solver, grid, denoise_final):
    dtype = x.dtype
    t_max, t_min = jnp.asarray(t_max, dtype), jnp.asarray(t_min, dtype)
    eps = _model_eps(sde, model, params, cond, null_cond, guidance_scale)

    def x0(y, t):
        return _limit_x0((y - sde.sigma(t) * eps(y, t)) / sde.alpha(t), clip, threshold)

    ctx = _Ctx(sde, eps, x0, num_steps.astype(dtype), t_max, options)
    step = _STEPS[solver]

    def body(i, state):
        x, carry = state
        s = _grid_time(sde, grid, ts, t_max, t_min, num_steps, i).astype(dtype)
        t = _grid_time(sde, grid, ts, t_max, t_min, num_steps, i + 1).astype(dtype)
        k = jax.random.fold_in(key, i) if SOLVER_INFO[solver].stochastic else None  # keys for SDEs only
        return step(ctx, x, s, t, carry, i, k)

    x = jax.lax.fori_loop(0, num_steps, body, (x, _init_carry(solver, x, t_max)))[0]
    return x0(x, t_min) if denoise_final else x


class _Plan(NamedTuple):
    """Validated static and traced arguments shared by :func:`solve_ode`,
    :func:`solve_sde` and :func:`sample`."""

    grid: str
    ts: jax.Array
    num_steps: jax.Array
    t_min: float
    t_max: float
    guidance_scale: Optional[jax.Array]
    options: dict
    clip: Optional[tuple]
    threshold: Optional[jax.Array]
    denoise_final: bool


def _real_scalar(name, value):
    """``value`` as a float, or TypeError unless it is a real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) and not (name == "S_tmax" and value == math.inf):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _check_options(solver, options, dtype):
    """The solver's options (``_OPTIONS``) with the given ones in place of the defaults, as
    arrays of ``dtype``."""
    known = _OPTIONS.get(solver, {})
    unknown = sorted(set(options) - set(known))
    if unknown:
        has = f"its options are {', '.join(known)}" if known else "it takes no options"
        verb = "is not an option" if len(unknown) == 1 else "are not options"
        raise TypeError(f"{', '.join(unknown)} {verb} of solver {solver!r} ({has})")
    merged = {**known, **{k: _real_scalar(k, v) for k, v in options.items()}}
    if solver == "edm_stochastic":
        if merged["S_churn"] < 0 or merged["S_tmin"] < 0 or merged["S_noise"] <= 0:
            raise ValueError(f"S_churn and S_tmin must be >= 0 and S_noise > 0, got S_churn="
                             f"{merged['S_churn']!r}, S_tmin={merged['S_tmin']!r}, S_noise="
                             f"{merged['S_noise']!r}")
        if merged["S_tmax"] < merged["S_tmin"]:
            raise ValueError(f"S_tmax must be >= S_tmin, got S_tmin={merged['S_tmin']!r}, "
                             f"S_tmax={merged['S_tmax']!r}")
    return {k: jnp.asarray(v, dtype) for k, v in merged.items()}


def _check_x0_options(solver, denoise_final, clip_x0, dynamic_threshold, dtype):
    """Validate ``denoise_final`` (a bool), ``clip_x0`` (a pair lo < hi) and
    ``dynamic_threshold`` (a percentile in (0, 1)); the last two only for the
    data-prediction solvers, and not together. Returns (clip, threshold) as arrays or None."""
    check_bool("denoise_final", denoise_final)
    for name, value in (("clip_x0", clip_x0), ("dynamic_threshold", dynamic_threshold)):
        if value is not None and solver not in X0_SOLVERS:
            raise ValueError(f"{name} applies to the data-prediction solvers "
                             f"({', '.join(X0_SOLVERS)}); solver {solver!r} does not step with "
                             f"x0, got {name}={value!r}")
    if clip_x0 is not None and dynamic_threshold is not None:
        raise ValueError(f"give clip_x0 or dynamic_threshold, not both; got clip_x0={clip_x0!r}, "
                         f"dynamic_threshold={dynamic_threshold!r}")
    clip = threshold = None
    if clip_x0 is not None:
        if not isinstance(clip_x0, (tuple, list)) or len(clip_x0) != 2:
            raise TypeError(f"clip_x0 must be a pair (lo, hi), got {clip_x0!r}")
        lo, hi = (_real_scalar("clip_x0", v) for v in clip_x0)
        if not lo < hi:
            raise ValueError(f"clip_x0 = (lo, hi) needs lo < hi, got {clip_x0!r}")
        clip = (jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))
    if dynamic_threshold is not None:
        p = _real_scalar("dynamic_threshold", dynamic_threshold)
        if not 0.0 < p < 1.0:
            raise ValueError(f"dynamic_threshold must be a percentile in (0, 1) (Imagen: 0.995), "
                             f"got {dynamic_threshold!r}")
        threshold = jnp.asarray(p, dtype)
    return clip, threshold


def _plan(sde, model, solver, valid, num_steps, time_grid, t_min, t_max, shape, dtype, params,
          cond, null_cond, guidance_scale, denoise_final, clip_x0, dynamic_threshold, options):
    """Validate everything but the positions; ``shape`` is (n, *event_shape)."""
    _check_sde(sde)
    _check_solver(solver, valid)
    grid, ts = _resolve_grid(solver, time_grid)
    if grid == "custom":
        num_steps = ts.shape[0] - 1
        t_min, t_max = _check_times(sde, ts[-1], ts[0])
    else:
        _check_num_steps(num_steps)
        t_min, t_max = _check_times(sde, t_min, t_max)
    if solver == "li_accelerated_sde" and not sde.variance_preserving:
        raise ValueError(f"solver {solver!r} is defined for DiscreteVPSDE and VPSDE only, got "
                         f"{type(sde).__name__}")
    clip, threshold = _check_x0_options(solver, denoise_final, clip_x0, dynamic_threshold, dtype)
    options = _check_options(solver, options, dtype)
    w = check_conditions(model, shape[0], params, cond, null_cond, guidance_scale)
    if not isinstance(model, Network):
        check_score(model, shape[1:], dtype)
    ts = jnp.zeros((0,), dtype) if ts is None else jnp.asarray(ts, dtype)
    return _Plan(grid, ts, jnp.asarray(num_steps, jnp.int32), t_min, t_max,
                 None if w is None else w.astype(dtype), options, clip, threshold,
                 bool(denoise_final))


def _run(x_T, key, sde, model, solver, valid, params, cond, null_cond, **kw):
    x_T = _check_positions("x_T", x_T, flat=False)
    p = _plan(sde, model, solver, valid, shape=x_T.shape, dtype=x_T.dtype, params=params,
              cond=cond, null_cond=null_cond, **kw)
    return _integrate(x_T, key, p.ts, p.t_max, p.t_min, p.num_steps, params, cond, null_cond,
                      p.guidance_scale, p.options, p.clip, p.threshold, sde=sde, model=model,
                      solver=solver, grid=p.grid, denoise_final=p.denoise_final)


# the default ODE solver of solve_ode and sample: see solve_ode's docstring for the measurement
DEFAULT_SOLVER = "unipc_2"


def solve_ode(x_T, sde, score, *, solver: str = DEFAULT_SOLVER, num_steps: int = 20,
              time_grid=None, t_min: Optional[float] = None, t_max: Optional[float] = None,
              params=None, cond=None, null_cond=None, guidance_scale=None,
              denoise_final: bool = False, clip_x0=None, dynamic_threshold=None):
    """Integrate the probability-flow ODE [Song2021, eq. 13] from ``t_max`` down to
    ``t_min`` (early stopping; defaults: the SDE's) for a batch ``x_T`` of shape (n, *shape).

    Args:
      score: the model: a :class:`diffusion.Network` or a per-point ``score(x, t)``.
      solver: one of ``ODE_SOLVERS`` (NFE per step in brackets):
        "euler", "heun" [2], "rk4" [4] (Runge-Kutta in t; orders 1, 2, 4);
        "ddim" (= "dpm_solver_1"), "dpm_solver_2" [2], "dpm_solver_3" [3] ([Lu2022a];
        orders 1-3 in the log-SNR step); the data-prediction solvers "dpm_solver_pp_2m",
        "dpm_solver_pp_3m" (multistep, orders 2 and 3), "dpm_solver_pp_2s" [2] (singlestep,
        order 2) [Lu2022b], "unipc_2", "unipc_3" ([Zhao2023], bh2;
        predictor-corrector with 1 NFE per step) and "edm_heun" [2] ([Karras2022],
        Algorithm 1: Heun in the noise level sigma_t/alpha_t, order 2, Karras grid);
        "li_accelerated" ([Li2024]; order 2).
        The default, "unipc_2", stays stable at 10 NFE with an inaccurate network. Measured
        with the exact noise prediction of N(0, diag(l)) (d = 64, l = 0.01 .. 1) scaled by
        (1 + delta t), RMS error at 10 NFE against a 200-step solve of the same network
        (solution RMS 0.23 / 0.93 / 0.08): for delta = 0.2 / -0.2 / 0.5, unipc_2 0.034 / 0.048 /
        0.035, dpm_solver_pp_2m 0.19 / 0.29 / 0.30, ddim 0.15 / 0.23 / 0.08, dpm_solver_2
        (the former default) 2.8 / 0.80 / 21, dpm_solver_3 (9 NFE) 8.3 at delta = 0.2; at 20
        NFE unipc_2 is the most accurate 1-NFE solver (0.0031 against 2M's 0.031). At 5 NFE
        none is accurate (unipc_2 0.41 / 2.1 / 8.1, ddim 0.24 / 0.83 / 0.18).
        tests/test_diffusion_solvers.py checks the delta = 0.2 case.
      num_steps: grid intervals (not NFE; see :func:`nfe`).
      time_grid: "uniform", "logsnr", "karras", or an array of strictly decreasing times
        (then ``num_steps``, ``t_min``, ``t_max`` come from it). Default: "logsnr" for the
        exponential integrators (they reach their order only there), "karras" for EDM's
        samplers, "uniform" otherwise.
      params, cond, null_cond, guidance_scale: a Network's parameters (any pytree), batch of
        conditions (one row per point), unconditional condition (one row, broadcast) and
        classifier-free guidance weight w (pred(null) + w (pred(cond) - pred(null)); [Ho2022],
        in diffusers' convention); traced, so new values do not recompile.
        See :mod:`diffusion.networks`.
      denoise_final: return the data prediction x0 = (x - sigma eps)/alpha at ``t_min``
        instead of x_{t_min} (one more evaluation; EDM's final step to sigma = 0).
      clip_x0: (lo, hi): clip every data prediction the solver uses to [lo, hi];
        dynamic_threshold: a percentile p (Imagen: 0.995): threshold every data prediction
        with :func:`threshold_x0`. Both only for the data-prediction solvers
        (``X0_SOLVERS``), and for bounded data (pixels in [-1, 1]).
    Returns the (n, *shape) positions at ``t_min``.
    """
    return _run(x_T, jax.random.key(0), sde, score, solver, ODE_SOLVERS, params, cond, null_cond,
                num_steps=num_steps, time_grid=time_grid, t_min=t_min, t_max=t_max,
                guidance_scale=guidance_scale, denoise_final=denoise_final, clip_x0=clip_x0,
                dynamic_threshold=dynamic_threshold, options={})


def solve_sde(key, x_T, sde, score, *, solver: str = "ddpm", num_steps: int = 100,
              time_grid=None, t_min=None, t_max=None, params=None, cond=None, null_cond=None,
              guidance_scale=None, denoise_final: bool = False, clip_x0=None,
              dynamic_threshold=None, **options):
    """Reverse-SDE sampling [Song2021, eq. 6] from ``x_T`` (n, *shape) at ``t_max``
    to ``t_min``: "euler_maruyama", "ddpm" (ancestral; [Ho2020]), "euler_ancestral"
    (the same step, which is the ancestral Euler step in sigma, on the Karras grid),
    "dpm_solver_pp_2m_sde" (DPM-Solver++(2M) for the SDE, log-SNR grid), "edm_stochastic"
    ([Karras2022, Algorithm 2], 2 NFE per step; ``options`` S_churn=40, S_tmin=0.05,
    S_tmax=50, S_noise=1.003 in EDM's noise level sigma_t/alpha_t, the paper's meaning),
    "li_accelerated_sde" ([Li2024]; VPSDE and DiscreteVPSDE only) or "pc" (DDPM
    predictor + Langevin corrector, 2 NFE per step; [Song2021]). Step i uses the key
    ``fold_in(key, i)``. The model, ``params``, ``cond``, ``null_cond``, ``guidance_scale``,
    ``denoise_final``, ``clip_x0`` and ``dynamic_threshold`` as in :func:`solve_ode`."""
    return _run(x_T, key, sde, score, solver, SDE_SOLVERS, params, cond, null_cond,
                num_steps=num_steps, time_grid=time_grid, t_min=t_min, t_max=t_max,
                guidance_scale=guidance_scale, denoise_final=denoise_final, clip_x0=clip_x0,
                dynamic_threshold=dynamic_threshold, options=options)


def sample(key, sde, score, num_samples: int, *, solver: str = DEFAULT_SOLVER,
           num_steps: int = 20, time_grid=None, t_min=None, t_max=None, dim=None, shape=None,
           dtype=None, params=None, cond=None, null_cond=None, guidance_scale=None,
           denoise_final: bool = False, clip_x0=None, dynamic_threshold=None,
           batch_size: Optional[int] = None, mesh=None, progress: Optional[bool] = None,
           **options):
    """Draw ``num_samples`` points: x_T from the SDE's prior, then :func:`solve_ode` (ODE
    solvers) or :func:`solve_sde` (SDE solvers, with their ``options``). The event shape is
    ``shape`` (a tuple, e.g. (8, 8, 1)) or ``dim`` (an int d, for shape (d,)); by default the
    exact scores' ``score.dim``. The model and ``params``, ``cond`` (one row per sample),
    ``null_cond``, ``guidance_scale``, ``denoise_final``, ``clip_x0``, ``dynamic_threshold``
    as in :func:`solve_ode`. Returns (num_samples, *shape).

    For many samples: ``batch_size`` solves them in chunks of that many (one compilation;
    the last chunk is padded), so memory holds one chunk of network activations at a time.
    All of x_T is drawn first, so an ODE solver's samples equal the unchunked ones (up to
    float round-off); an SDE solver draws each chunk's noise from ``fold_in(key, chunk)``.
    ``mesh`` (a ``jax.sharding.Mesh``) splits each chunk's samples over its first axis (the
    devices of one host, or of many after ``jax.distributed.initialize``); the result
    equals the single-device one. ``progress``: a bar over chunks (default: on when stderr
    is a terminal and there are several chunks)."""
    num_samples = check_int("num_samples", num_samples)
    dtype = jnp.dtype(dtype or jnp.zeros(()).dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype (float32, float64, ...), got {dtype}")
    shape = (int(num_samples),) + _event_shape(dim, shape, score)
    chunk = _check_batching(batch_size, mesh, shape[0])
    p = _plan(sde, score, solver, SOLVERS, num_steps, time_grid, t_min, t_max, shape, dtype,
              params, cond, null_cond, guidance_scale, denoise_final, clip_x0,
              dynamic_threshold, options)
    statics = dict(sde=sde, model=score, solver=solver, grid=p.grid,
                   denoise_final=p.denoise_final)
    args = (p.ts, p.t_max, p.t_min, p.num_steps)
    rest = (p.guidance_scale, p.options, p.clip, p.threshold)
    if chunk == shape[0] and mesh is None:
        return _sample(key, *args, params, cond, null_cond, *rest, **statics, shape=shape,
                       dtype=dtype)
    k_prior, k_sde = jax.random.split(key)
    x_T = _prior(k_prior, sde=sde, shape=shape, dtype=dtype)
    starts = range(0, shape[0], chunk)
    if progress is None:
        progress = sys.stderr.isatty() and len(starts) > 1
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=shape[0], desc=solver, unit="sample")
    out = []
    try:
        for i, start in enumerate(starts):
            rows = min(chunk, shape[0] - start)
            x, c = (_rows(tree, start, chunk) for tree in (x_T, cond))
            if mesh is not None:
                x, c = _shard_rows((x, c), mesh)
            key_i = k_sde if len(starts) == 1 else jax.random.fold_in(k_sde, i)
            out.append(_integrate(x, key_i, *args, params, c, null_cond, *rest,
                                  **statics)[:rows])
            if bar is not None:
                bar.update(rows)
    finally:
        if bar is not None:
            bar.close()
    return out[0] if len(out) == 1 else jnp.concatenate(out)


def _check_batching(batch_size, mesh, num_samples) -> int:
    """The chunk size of :func:`sample` (``num_samples`` when unchunked), checked against
    the mesh."""
    if batch_size is None:
        chunk = num_samples
    else:
        chunk = min(check_int("batch_size", batch_size), num_samples)
    if mesh is not None:
        check_mesh(mesh, chunk, "the samples per chunk (batch_size, else num_samples)")
    return chunk


def _rows(tree, start, size):
    """Rows start .. start + size of every leaf (a batch of x_T or conditions), the last
    chunk padded with repeats of its own rows, so that every chunk has one shape."""

    def take(leaf):
        part = leaf[start:start + size]
        if part.shape[0] < size:
            reps = -(-size // part.shape[0])
            part = jnp.concatenate([part] * reps)[:size]
        return part

    return jax.tree.map(take, tree)


def _shard_rows(tree, mesh):
    """Every leaf's leading (sample) axis on the first axis of ``mesh``."""
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
    return jax.tree.map(lambda leaf: jax.device_put(leaf, sharding), tree)


@functools.partial(jax.jit, static_argnames=("sde", "shape", "dtype"))
def _prior(key, *, sde, shape, dtype):
    return sde.prior_sample(key, shape, dtype)


@functools.partial(jax.jit, static_argnames=("sde", "model", "solver", "grid", "denoise_final",
                                             "shape", "dtype"))
def _sample(key, ts, t_max, t_min, num_steps, params, cond, null_cond, guidance_scale, options,
            clip, threshold, *, sde, model, solver, grid, denoise_final, shape, dtype):
    k_prior, k_sde = jax.random.split(key)
    x_T = _prior(k_prior, sde=sde, shape=shape, dtype=dtype)
    return _integrate(x_T, k_sde, ts, t_max, t_min, num_steps, params, cond, null_cond,
                      guidance_scale, options, clip, threshold, sde=sde, model=model,
                      solver=solver, grid=grid, denoise_final=denoise_final)


# ------------------------------------------------------------- exact flow and teleportation

def gaussian_flow(x_s, sde, mean, cov, s, t):
    """Exact PF-ODE flow map from time s to time t for data N(mean, cov) (any of the linear
    SDEs): in cov's eigenbasis (eigenvalues l_k), each coordinate of x - alpha mu scales by
    sqrt((alpha_t^2 l_k + sigma_t^2) / (alpha_s^2 l_k + sigma_s^2)) ([Wang2024, eq. 6],
    written for a general Gaussian transition). ``x_s``: (n, d) or (d,)."""
    g = gaussian_data(mean, cov)
    x_s = jnp.asarray(x_s)
    dtype = x_s.dtype if jnp.issubdtype(x_s.dtype, jnp.floating) else jnp.zeros(()).dtype
    mu, lam, u = (jnp.asarray(a, dtype) for a in g)
    s, t = jnp.asarray(s, dtype), jnp.asarray(t, dtype)
    v_s = sde.alpha(s) ** 2 * lam + sde.sigma(s) ** 2
    v_t = sde.alpha(t) ** 2 * lam + sde.sigma(t) ** 2
    z = (x_s - sde.alpha(s) * mu) @ u
    return sde.alpha(t) * mu + (z * jnp.sqrt(v_t / v_s)) @ u.T


def teleport(x_T, sde, mean, cov, t_skip, *, t_max=None):
    """Analytical teleportation [Wang2024, Sec. 5]: move ``x_T`` from ``t_max`` to
    ``t_skip`` with the exact flow of the Gaussian N(mean, cov) fitted to the data (its mean and
    covariance); then run a solver from ``t_skip`` (``solve_ode(..., t_max=t_skip)``)."""
    _check_sde(sde)
    t_max = sde.t_max if t_max is None else float(t_max)
    if not t_skip < t_max:
        raise ValueError(f"t_skip must be < t_max, got t_skip={t_skip!r}, t_max={t_max!r}")
    return gaussian_flow(x_T, sde, mean, cov, t_max, t_skip)

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
``nfe(solver, num_steps)`` (Heun 2, RK4 4, DPM-Solver-2 2, DPM-Solver-3 3 per step, the
others 1). Note that the reference DPM-Solver code uses ``steps`` for NFE.

The probability-flow ODE (Song et al. 2021, eq. 13) is dx/dt = f(t) x - g(t)^2/2 score(x, t).
Exponential integrators write it in the half log-SNR lambda (Lu et al. 2022, eq. 3.4):
x_t = (alpha_t/alpha_s) x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-lambda} eps(x_lambda) dlambda.

The step loop is a ``lax.fori_loop`` whose trip count is a traced integer and whose grid is
computed inside the loop, so one compilation serves every ``num_steps`` (reverse-mode
differentiation through the solver is therefore not supported; forward mode is).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplers.base import as_float, check_finite_rows

from .networks import Network, check_conditions, eps_function
from .sde import SDE, VESDE, VPSDE, DiscreteVPSDE
from .scores import gaussian_data

__all__ = ["ODE_SOLVERS", "SDE_SOLVERS", "SOLVERS", "TIME_GRIDS", "nfe", "time_grid",
           "solve_ode", "solve_sde", "sample", "gaussian_flow", "teleport", "check_score"]

# name -> (score evaluations per step, default grid, stochastic?)
_SPEC = {
    "euler": (1, "uniform", False),
    "heun": (2, "uniform", False),
    "rk4": (4, "uniform", False),
    "ddim": (1, "logsnr", False),
    "dpm_solver_1": (1, "logsnr", False),
    "dpm_solver_2": (2, "logsnr", False),
    "dpm_solver_3": (3, "logsnr", False),
    "dpm_solver_pp_2m": (1, "logsnr", False),
    "li_accelerated": (1, "logsnr", False),
    "euler_maruyama": (1, "uniform", True),
    "ddpm": (1, "uniform", True),
    "li_accelerated_sde": (1, "uniform", True),
    "pc": (2, "uniform", True),
}
PC_SNR = 0.16  # score_sde's configs for the Langevin corrector
ODE_SOLVERS = tuple(k for k, v in _SPEC.items() if not v[2])
SDE_SOLVERS = tuple(k for k, v in _SPEC.items() if v[2])
SOLVERS = ODE_SOLVERS + SDE_SOLVERS
TIME_GRIDS = ("uniform", "logsnr", "karras")
KARRAS_RHO = 7.0


def nfe(solver: str, num_steps: int) -> int:
    """Number of score evaluations of ``num_steps`` steps of ``solver``."""
    _check_solver(solver, SOLVERS)
    return _SPEC[solver][0] * int(num_steps)


# ----------------------------------------------------------------------------- validation

def _check_solver(solver, valid):
    if solver not in valid:
        raise ValueError(f"solver must be one of {', '.join(valid)}; got {solver!r}")


def _check_sde(sde):
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a diffusion SDE (VPSDE, SubVPSDE, VESDE, DiscreteVPSDE), "
                        f"got {sde!r}")


def _check_num_steps(num_steps):
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise TypeError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")


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
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim must be an int d (samples of shape (num_samples, d)); for "
                            f"image-shaped events pass shape=, got dim={dim!r}")
        if dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got dim={dim!r}")
        return (int(dim),)
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in shape):
        raise TypeError(f"shape must be a tuple of ints (the event shape, e.g. (8, 8, 1)), got "
                        f"shape={shape!r}")
    if not shape or min(shape) < 1:
        raise ValueError(f"shape must be a non-empty tuple of integers >= 1, got shape={shape!r}")
    return tuple(int(k) for k in shape)


def _resolve_grid(solver, time_grid):
    if time_grid is None:
        return _SPEC[solver][1], None
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
    elif grid == "karras":  # Karras et al. 2022 eq. 5, in the EDM noise level sigma/alpha
        hi = jnp.exp(-sde.log_snr(t_max) / KARRAS_RHO)
        lo = jnp.exp(-sde.log_snr(t_min) / KARRAS_RHO)
        t = sde.t_of_log_snr(-KARRAS_RHO * jnp.log(hi + u * (lo - hi)))
    else:  # pragma: no cover - validated before
        raise ValueError(grid)
    return jnp.where(i == 0, t_max, jnp.where(i == num_steps, t_min, t))


def time_grid(sde, num_steps: int, kind: str = "uniform", *, t_min=None, t_max=None):
    """The ``num_steps + 1`` grid times from t_max down to t_min: ``"uniform"`` in t,
    ``"logsnr"`` uniform in lambda_t (Lu et al. 2022, Sec. 3.3), ``"karras"``
    (Karras et al. 2022, eq. 5, rho = 7, in the noise level exp(-lambda_t))."""
    _check_sde(sde)
    _check_num_steps(num_steps)
    t_min, t_max = _check_times(sde, t_min, t_max)
    if kind not in TIME_GRIDS:
        raise ValueError(f"kind must be one of {', '.join(TIME_GRIDS)}; got {kind!r}")
    i = jnp.arange(num_steps + 1)
    return _grid_time(sde, kind, None, t_max, t_min, num_steps, i)


# --------------------------------------------------------------------------------- steps

class _Ctx(NamedTuple):
    sde: object
    eps: Callable  # batched noise prediction: (n, *shape), scalar t -> (n, *shape)


def _score(c, x, t):
    return -c.eps(x, t) / c.sde.sigma(t)


def _vel(c, x, t):
    return c.sde.pf_ode_drift(x, t, _score(c, x, t))


def _euler(c, x, s, t, carry, first, key):
    return x + (t - s) * _vel(c, x, s), carry


def _heun(c, x, s, t, carry, first, key):
    k1 = _vel(c, x, s)
    k2 = _vel(c, x + (t - s) * k1, t)
    return x + 0.5 * (t - s) * (k1 + k2), carry


def _rk4(c, x, s, t, carry, first, key):
    dt = t - s
    m = s + 0.5 * dt
    k1 = _vel(c, x, s)
    k2 = _vel(c, x + 0.5 * dt * k1, m)
    k3 = _vel(c, x + 0.5 * dt * k2, m)
    k4 = _vel(c, x + dt * k3, t)
    return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), carry


def _ddim(c, x, s, t, carry, first, key):
    """DDIM = DPM-Solver-1 (Lu et al. 2022, eq. 3.7): x_t = (a_t/a_s) x - s_t (e^h - 1) eps."""
    sde = c.sde
    h = sde.log_snr(t) - sde.log_snr(s)
    x_t = sde.alpha(t) / sde.alpha(s) * x - sde.sigma(t) * jnp.expm1(h) * c.eps(x, s)
    return x_t, carry


def _dpm2(c, x, s, t, carry, first, key):
    """DPM-Solver-2 (Lu et al. 2022, Algorithm 1, r1 = 1/2)."""
    sde = c.sde
    ls = sde.log_snr(s)
    h = sde.log_snr(t) - ls
    s1 = sde.t_of_log_snr(ls + 0.5 * h)
    a_s = sde.alpha(s)
    eps_s = c.eps(x, s)
    u = sde.alpha(s1) / a_s * x - sde.sigma(s1) * jnp.expm1(0.5 * h) * eps_s
    x_t = sde.alpha(t) / a_s * x - sde.sigma(t) * jnp.expm1(h) * c.eps(u, s1)
    return x_t, carry


def _dpm3(c, x, s, t, carry, first, key):
    """DPM-Solver-3 (Lu et al. 2022, Algorithm 2, r1 = 1/3, r2 = 2/3)."""
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


def _dpmpp2m(c, x, s, t, carry, first, key):
    """DPM-Solver++(2M) (Lu et al. 2022b, "DPM-Solver++", Algorithm 2): multistep, data
    prediction D = (x - sigma eps)/alpha, x_t = (s_t/s_s) x - a_t (e^{-h} - 1) Dbar."""
    sde = c.sde
    d_prev, h_prev = carry
    h = sde.log_snr(t) - sde.log_snr(s)
    sig_s = sde.sigma(s)
    d_s = (x - sig_s * c.eps(x, s)) / sde.alpha(s)
    r = h_prev / h
    dbar = jnp.where(first, d_s, (1.0 + 0.5 / r) * d_s - (0.5 / r) * d_prev)
    x_t = sde.sigma(t) / sig_s * x - sde.alpha(t) * jnp.expm1(-h) * dbar
    return x_t, (d_s, h)


def _li_ode(c, x, s, t, carry, first, key):
    """Accelerated deterministic sampler of Li, Huang, Efimov, Wei, Chi & Chen (ICML 2024,
    arXiv 2403.03852), in the two-step form of the authors' code: DDIM plus the exact integral,
    in the DDIM variable sb = sigma/alpha = e^{-lambda}, of eps interpolated linearly in
    w = 1/(1 + sb^2) (= abar for VP) through the last two evaluations:
    x_t = DDIM(x_s) + a_t / (w_s - w_p) [w_s (sb_t - sb_s) - (atan sb_t - atan sb_s)]
    (eps_p - eps_s); plain DDIM on the first step. 1 NFE per step."""
    sde = c.sde
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


def _euler_maruyama(c, x, s, t, carry, first, key):
    """Euler-Maruyama on the reverse SDE dx = [f x - g^2 score] dt + g dW (Song et al. eq. 6)."""
    sde = c.sde
    dt = s - t
    drift = sde.drift_coef(s) * x - sde.g2(s) * _score(c, x, s)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x - dt * drift + jnp.sqrt(sde.g2(s) * dt) * noise, carry


def _ddpm(c, x, s, t, carry, first, key):
    """DDPM ancestral step (Ho et al. 2020, eq. 7) for a general Gaussian transition: draw from
    q(x_t | x_s, x_0 = D(x_s)) with the Tweedie denoiser D = (x + sigma_s^2 score)/alpha_s."""
    sde = c.sde
    a_s, a_t, sig_s, sig_t = sde.alpha(s), sde.alpha(t), sde.sigma(s), sde.sigma(t)
    a_ts = a_s / a_t
    var_ts = sig_s ** 2 - a_ts ** 2 * sig_t ** 2
    x0 = (x + sig_s ** 2 * _score(c, x, s)) / a_s
    mean = a_ts * sig_t ** 2 / sig_s ** 2 * x + a_t * var_ts / sig_s ** 2 * x0
    std = jnp.sqrt(jnp.maximum(var_ts, 0.0)) * sig_t / sig_s
    return mean + std * jax.random.normal(key, x.shape, x.dtype), carry


def _li_sde(c, x, s, t, carry, first, key):
    """Accelerated stochastic sampler of Li et al. (ICML 2024; the README of the authors'
    repository): with a = abar_s / abar_t,
    Y+ = Y + sqrt((1-a)/2) Z+,  Y_t = (Y+ + (1-a) score(Y+, s)) / sqrt(a) + sqrt((1-a)/2) Z."""
    sde = c.sde
    a = (sde.alpha(s) / sde.alpha(t)) ** 2
    k1, k2 = jax.random.split(key)
    std = jnp.sqrt(0.5 * (1.0 - a))
    y = x + std * jax.random.normal(k1, x.shape, x.dtype)
    y = (y + (1.0 - a) * _score(c, y, s)) / jnp.sqrt(a)
    return y + std * jax.random.normal(k2, x.shape, x.dtype), carry


def _pc(c, x, s, t, carry, first, key):
    """Predictor-corrector (Song et al. 2021, Algorithm 5 for VP, 4 for VE): a DDPM ancestral
    predictor step s -> t, then one Langevin corrector step at t,
    x <- x + e score(x, t) + sqrt(2 e) z with e = 2 a (snr |z| / |score|)^2, norms averaged
    over the batch as in the authors' code (each point's norm over all its event axes),
    a = alpha_s^2 / alpha_t^2 (the discrete alpha_i; 1 for VE) and snr = PC_SNR = 0.16."""
    k_pred, k_corr = jax.random.split(key)
    x, carry = _ddpm(c, x, s, t, carry, first, k_pred)
    g = _score(c, x, t)
    z = jax.random.normal(k_corr, x.shape, x.dtype)

    def mean_norm(a):
        return jnp.mean(jnp.linalg.norm(a.reshape(a.shape[0], -1), axis=-1))

    ratio = (mean_norm(z) / mean_norm(g)) ** 2
    e = 2.0 * (c.sde.alpha(s) / c.sde.alpha(t)) ** 2 * PC_SNR ** 2 * ratio
    return x + e * g + jnp.sqrt(2.0 * e) * z, carry


_STEPS = {"euler": _euler, "heun": _heun, "rk4": _rk4, "ddim": _ddim, "dpm_solver_1": _ddim,
          "dpm_solver_2": _dpm2, "dpm_solver_3": _dpm3, "dpm_solver_pp_2m": _dpmpp2m,
          "li_accelerated": _li_ode, "euler_maruyama": _euler_maruyama, "ddpm": _ddpm,
          "li_accelerated_sde": _li_sde, "pc": _pc}


def _init_carry(solver, x):
    if solver == "dpm_solver_pp_2m":
        return jnp.zeros_like(x), jnp.ones((), x.dtype)
    if solver == "li_accelerated":
        return jnp.zeros_like(x), jnp.zeros((), x.dtype)
    return ()


def _model_eps(sde, model, params, cond, null_cond, guidance_scale):
    """The batched eps(x, t) of a :class:`Network` or of a per-point score(x, t)."""
    if isinstance(model, Network):
        return eps_function(sde, model, params, cond, null_cond, guidance_scale)
    score = jax.vmap(model, (0, None))
    return lambda x, t: -sde.sigma(t) * score(x, t)


@functools.partial(jax.jit, static_argnames=("sde", "model", "solver", "grid"))
def _integrate(x, key, ts, t_max, t_min, num_steps, params, cond, null_cond, guidance_scale, *,
               sde, model, solver, grid):
    dtype = x.dtype
    t_max, t_min = jnp.asarray(t_max, dtype), jnp.asarray(t_min, dtype)
    ctx = _Ctx(sde, _model_eps(sde, model, params, cond, null_cond, guidance_scale))
    step = _STEPS[solver]

    def body(i, state):
        x, carry = state
        s = _grid_time(sde, grid, ts, t_max, t_min, num_steps, i).astype(dtype)
        t = _grid_time(sde, grid, ts, t_max, t_min, num_steps, i + 1).astype(dtype)
        k = jax.random.fold_in(key, i) if _SPEC[solver][2] else None  # keys for SDEs only
        return step(ctx, x, s, t, carry, i == 0, k)

    return jax.lax.fori_loop(0, num_steps, body, (x, _init_carry(solver, x)))[0]


class _Plan(NamedTuple):
    """Validated static and traced arguments shared by :func:`solve_ode`,
    :func:`solve_sde` and :func:`sample`."""

    grid: str
    ts: jax.Array
    num_steps: jax.Array
    t_min: float
    t_max: float
    guidance_scale: Optional[jax.Array]


def _plan(sde, model, solver, valid, num_steps, time_grid, t_min, t_max, shape, dtype, params,
          cond, null_cond, guidance_scale):
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
    w = check_conditions(model, shape[0], params, cond, null_cond, guidance_scale)
    if not isinstance(model, Network):
        check_score(model, shape[1:], dtype)
    ts = jnp.zeros((0,), dtype) if ts is None else jnp.asarray(ts, dtype)
    return _Plan(grid, ts, jnp.asarray(num_steps, jnp.int32), t_min, t_max,
                 None if w is None else w.astype(dtype))


def _run(x_T, key, sde, model, solver, num_steps, time_grid, t_min, t_max, valid, params, cond,
         null_cond, guidance_scale):
    x_T = _check_positions("x_T", x_T, flat=False)
    p = _plan(sde, model, solver, valid, num_steps, time_grid, t_min, t_max, x_T.shape,
              x_T.dtype, params, cond, null_cond, guidance_scale)
    return _integrate(x_T, key, p.ts, p.t_max, p.t_min, p.num_steps, params, cond, null_cond,
                      p.guidance_scale, sde=sde, model=model, solver=solver, grid=p.grid)


def solve_ode(x_T, sde, score, *, solver: str = "dpm_solver_2", num_steps: int = 20,
              time_grid=None, t_min: Optional[float] = None, t_max: Optional[float] = None,
              params=None, cond=None, null_cond=None, guidance_scale=None):
    """Integrate the probability-flow ODE (Song et al. 2021, eq. 13) from ``t_max`` down to
    ``t_min`` (early stopping; defaults: the SDE's) for a batch ``x_T`` of shape (n, *shape).

    Args:
      score: the model: a :class:`diffusion.Network` or a per-point ``score(x, t)``.
      solver: one of ``ODE_SOLVERS``: "euler", "heun", "rk4" (Runge-Kutta in t; orders 1, 2, 4),
        "ddim" (= "dpm_solver_1"), "dpm_solver_2", "dpm_solver_3" (Lu et al. 2022; orders 1-3
        in the log-SNR step), "dpm_solver_pp_2m" (Lu et al. 2022b; order 2, 1 NFE/step),
        "li_accelerated" (Li et al. 2024; order 2, 1 NFE/step).
      num_steps: grid intervals (not NFE; see :func:`nfe`).
      time_grid: "uniform", "logsnr", "karras", or an array of strictly decreasing times
        (then ``num_steps``, ``t_min``, ``t_max`` come from it). Default: "logsnr" for the
        exponential integrators (they reach their order only there), "uniform" otherwise.
      params, cond, null_cond, guidance_scale: a Network's parameters (any pytree), batch of
        conditions (one row per point), unconditional condition (one row, broadcast) and
        classifier-free guidance weight w (pred(null) + w (pred(cond) - pred(null)); Ho &
        Salimans 2022, in diffusers' convention); traced, so new values do not recompile.
        See :mod:`diffusion.networks`.
    Returns the (n, *shape) positions at ``t_min``.
    """
    return _run(x_T, jax.random.key(0), sde, score, solver, num_steps, time_grid, t_min, t_max,
                ODE_SOLVERS, params, cond, null_cond, guidance_scale)


def solve_sde(key, x_T, sde, score, *, solver: str = "ddpm", num_steps: int = 100,
              time_grid=None, t_min=None, t_max=None, params=None, cond=None, null_cond=None,
              guidance_scale=None):
    """Reverse-SDE sampling (Song et al. 2021, eq. 6) from ``x_T`` (n, *shape) at ``t_max``
    to ``t_min``: "euler_maruyama", "ddpm" (ancestral; Ho et al. 2020), "li_accelerated_sde"
    (Li et al. 2024; VPSDE and DiscreteVPSDE only) or "pc" (DDPM predictor + Langevin
    corrector, 2 NFE per step; Song et al. 2021). Step i uses the key ``fold_in(key, i)``.
    The model and ``params``, ``cond``, ``null_cond``, ``guidance_scale`` as in
    :func:`solve_ode`."""
    return _run(x_T, key, sde, score, solver, num_steps, time_grid, t_min, t_max, SDE_SOLVERS,
                params, cond, null_cond, guidance_scale)


def sample(key, sde, score, num_samples: int, *, solver: str = "dpm_solver_2",
           num_steps: int = 20, time_grid=None, t_min=None, t_max=None, dim=None, shape=None,
           dtype=None, params=None, cond=None, null_cond=None, guidance_scale=None):
    """Draw ``num_samples`` points: x_T from the SDE's prior, then :func:`solve_ode` (ODE
    solvers) or :func:`solve_sde` (SDE solvers). The event shape is ``shape`` (a tuple, e.g.
    (8, 8, 1)) or ``dim`` (an int d, for shape (d,)); by default the exact scores'
    ``score.dim``. The model and ``params``, ``cond`` (one row per sample), ``null_cond``,
    ``guidance_scale`` as in :func:`solve_ode`. Returns (num_samples, *shape)."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
            or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    dtype = jnp.dtype(dtype or jnp.zeros(()).dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype (float32, float64, ...), got {dtype}")
    shape = (int(num_samples),) + _event_shape(dim, shape, score)
    p = _plan(sde, score, solver, SOLVERS, num_steps, time_grid, t_min, t_max, shape, dtype,
              params, cond, null_cond, guidance_scale)
    return _sample(key, p.ts, p.t_max, p.t_min, p.num_steps, params, cond, null_cond,
                   p.guidance_scale, sde=sde, model=score, solver=solver, grid=p.grid,
                   shape=shape, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("sde", "model", "solver", "grid", "shape", "dtype"))
def _sample(key, ts, t_max, t_min, num_steps, params, cond, null_cond, guidance_scale, *, sde,
            model, solver, grid, shape, dtype):
    k_prior, k_sde = jax.random.split(key)
    x_T = sde.prior_sample(k_prior, shape, dtype)
    return _integrate(x_T, k_sde, ts, t_max, t_min, num_steps, params, cond, null_cond,
                      guidance_scale, sde=sde, model=model, solver=solver, grid=grid)


# ------------------------------------------------------------- exact flow and teleportation

def gaussian_flow(x_s, sde, mean, cov, s, t):
    """Exact PF-ODE flow map from time s to time t for data N(mean, cov) (any of the linear
    SDEs): in cov's eigenbasis (eigenvalues l_k), each coordinate of x - alpha mu scales by
    sqrt((alpha_t^2 l_k + sigma_t^2) / (alpha_s^2 l_k + sigma_s^2)) (Wang & Vastola 2024, eq. 6,
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
    """Analytical teleportation (Wang & Vastola 2024, Sec. 5): move ``x_T`` from ``t_max`` to
    ``t_skip`` with the exact flow of the Gaussian N(mean, cov) fitted to the data (its mean and
    covariance); then run a solver from ``t_skip`` (``solve_ode(..., t_max=t_skip)``)."""
    _check_sde(sde)
    t_max = sde.t_max if t_max is None else float(t_max)
    if not t_skip < t_max:
        raise ValueError(f"t_skip must be < t_max, got t_skip={t_skip!r}, t_max={t_max!r}")
    return gaussian_flow(x_T, sde, mean, cov, t_max, t_skip)

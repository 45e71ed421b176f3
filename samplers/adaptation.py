"""Warm-up adaptation: step size, preconditioner, and MALT's trajectory length and friction.

* Dual averaging of the log step size towards a target acceptance ([Hoffman2014,
  Algorithm 5], with their t0 = 10, kappa = 0.75 and shrinkage
  point log(10 h0)), and gamma = 0.1, twice theirs. Over Stan's 50-step terminal window the
  averaged step of one chain carries two opposite biases: its noisy acceptance makes the
  iterate swing, and the average of swinging log-steps accepts more than the iterates did
  (a Jensen gap), while the pull towards the shrinkage point keeps the step large. gamma
  sets the balance: on a 50-d Gaussian (variances 1e-2..1e2, 1000 warm-up steps, 32-64
  chains) the chains' mean acceptance is 0.623 / 0.574 / 0.526 for MALA (target 0.574)
  and 0.885 / 0.827 / 0.791 for MALT (target 0.8) at gamma = 0.05 / 0.1 / 0.2. Keeping
  the final iterate instead of the average spreads the chains' acceptance 3-4 times wider
  (sd 0.24 and 0.12 against 0.07 and 0.03). Unadjusted samplers (ULA, underdamped) have
  no acceptance; they are tuned on the energy error of their step per dimension instead,
  as MCLMC is tuned [Robnik2023, §3.2]:
  the statistic a = exp(-ΔE² / (d ξ)) has mean 1 / sqrt(3) exactly when ΔE ~ N(0, d ξ), so
  dual averaging towards 1/sqrt(3) drives Var[ΔE] / d to ξ = :data:`ENERGY_VARIANCE_PER_DIM`.
* Stan's windowed scheme (Stan Reference Manual, "HMC algorithm parameters": an initial fast
  window of 75 steps, slow windows of 25, 50, 100, ... steps, the last stretched to the
  terminal fast window of 50; shrunk to 15% / 75% / 10% when warm-up is shorter than 150):
  the step size adapts in every step; at the end of each slow window the inverse mass
  matrix becomes that window's regularised covariance (n / (n + 5)) S + 10^-3 (5 / (n + 5)) I
  (diagonal or dense), the dual averaging restarts from the current step, and MALT's
  trajectory length and friction are set from the window's largest eigenvalue. A window's
  estimate is only as good as its draws mix: MALA's random walk barely moves along the
  widest directions in the early windows, so its preconditioner converges more slowly than
  MALT's (50-d, variances 1e-2..1e2: after 1000 steps the autocorrelation time of the
  last window's draws exceeds 25 on 9% of the coordinates and reaches 300 on the widest,
  whose adapted variance is then off by up to 95%; after 2000 steps it exceeds 22 on
  fewer than 1%; a dense 10-d one with condition number 1e3 needs about 4000).
* The ensemble version (``pooled=True``, for many chains): the same windows with the
  covariance pooled over all chains' draws (the pairwise merge of Welford sums, [Chan1979]) and one
  step size averaged over chains, so that short windows already give good estimates.
* MALT: with lambda the largest eigenvalue of the target covariance in the preconditioned
  coordinates (1 for a perfect preconditioner; larger when a diagonal one misses
  correlations), the slowest mode has standard deviation sigma = sqrt(lambda); the
  trajectory length is L h = TRAJECTORY_PER_SIGMA * sigma and the friction
  gamma = FRICTION_PER_SIGMA / sigma (a damping ratio of 1/2 on that mode).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .langevin import MAX_INTEGRATION_STEPS

__all__ = [
    "DualAveragingState", "dual_averaging_init", "dual_averaging_update", "adapted_step_size",
    "WelfordState", "WindowState", "window_schedule", "window_init", "window_update",
    "window_final", "tuning_statistic", "default_target",
]

ENERGY_VARIANCE_PER_DIM = 5e-4
"""ξ, the energy-error variance per dimension unadjusted samplers are tuned to (the default
of MCLMC's tuning, [Robnik2023])."""

UNADJUSTED_TARGET = 1.0 / math.sqrt(3.0)
TRAJECTORY_PER_SIGMA = 2.0
FRICTION_PER_SIGMA = 1.0


# -------------------------------------------------------------------- dual averaging

class DualAveragingState(NamedTuple):
    """``log_step``: the iterate used during warm-up; ``log_step_avg``: its weighted average,
    the step size kept after warm-up; ``error_avg``: running mean of target - acceptance;
    ``count``: number of updates; ``mu``: the shrinkage point."""

    log_step: jnp.ndarray
    log_step_avg: jnp.ndarray
    error_avg: jnp.ndarray
    count: jnp.ndarray
    mu: jnp.ndarray


def dual_averaging_init(step_size) -> DualAveragingState:
    """Start adaptation from ``step_size`` (shrinks towards ``10 * step_size``)."""
    log_h = jnp.log(jnp.asarray(step_size, dtype=jnp.result_type(float)))
    zero = jnp.zeros_like(log_h)
    return DualAveragingState(log_h, log_h, zero, jnp.zeros((), jnp.int32), jnp.log(10.0) + log_h)


def dual_averaging_update(
    state: DualAveragingState, acceptance_rate, target: float,
    gamma: float = 0.1, t0: float = 10.0, kappa: float = 0.75,
) -> DualAveragingState:
    """One update of [Hoffman2014, eq. (6)]: errors are ``target - acceptance``."""
    count = state.count + 1
    t = count.astype(state.log_step.dtype)
    acceptance_rate = jnp.nan_to_num(acceptance_rate, nan=0.0)
    error_avg = (1.0 - 1.0 / (t + t0)) * state.error_avg + (target - acceptance_rate) / (t + t0)
    log_step = state.mu - jnp.sqrt(t) / gamma * error_avg
    weight = t ** (-kappa)
    log_step_avg = weight * log_step + (1.0 - weight) * state.log_step_avg
    return DualAveragingState(log_step, log_step_avg, error_avg, count, state.mu)


def adapted_step_size(state: DualAveragingState):
    """The step size to keep once warm-up ends."""
    return jnp.exp(state.log_step_avg)


def tuning_statistic(info, dim: int):
    """What dual averaging drives to its target: the acceptance rate of an adjusted sampler,
    exp(-ΔE² / (d ξ)) of an unadjusted one (None when the info has neither)."""
    if hasattr(info, "acceptance_rate"):
        return info.acceptance_rate
    energy = getattr(info, "energy_error", None)
    if energy is None:
        return None
    return jnp.exp(-jnp.square(energy) / (dim * ENERGY_VARIANCE_PER_DIM))


def default_target(algorithm_name: str, info) -> float:
    """The default target of :func:`tuning_statistic`: 0.574 for MALA
    [Roberts1998], 0.8 for MALT (NumPyro's and Stan's HMC default), 1/sqrt(3) for the energy
    statistic of unadjusted samplers."""
    if not hasattr(info, "acceptance_rate"):
        return UNADJUSTED_TARGET
    return 0.8 if algorithm_name == "malt" else 0.574


# ------------------------------------------------------------------------ covariance

class WelfordState(NamedTuple):
    """Running mean and sum of squared deviations (a (d,) diagonal or (d, d) matrix)."""

    count: jnp.ndarray
    mean: jnp.ndarray
    m2: jnp.ndarray


def _welford_init(dim: int, dense: bool, dtype) -> WelfordState:
    m2 = jnp.zeros((dim, dim) if dense else (dim,), dtype)
    return WelfordState(jnp.zeros((), dtype), jnp.zeros((dim,), dtype), m2)


def _welford_update(state: WelfordState, x) -> WelfordState:
    count = state.count + 1
    delta = x - state.mean
    mean = state.mean + delta / count
    after = x - mean
    m2 = state.m2 + (jnp.outer(delta, after) if state.m2.ndim == 2 else delta * after)
    return WelfordState(count, mean, m2)


def _pool(state: WelfordState, axis_name: str) -> WelfordState:
    """Merge the chains' Welford sums (equal counts): the pooled mean and sum of squares."""
    count = jax.lax.psum(state.count, axis_name)
    mean = jax.lax.pmean(state.mean, axis_name)
    shift = state.mean - mean
    spread = jnp.outer(shift, shift) if state.m2.ndim == 2 else jnp.square(shift)
    m2 = jax.lax.psum(state.m2 + state.count * spread, axis_name)
    return WelfordState(count, mean, m2)


def _regularised_covariance(state: WelfordState, dense: bool):
    """Stan's (n / (n + 5)) S + 10^-3 (5 / (n + 5)) I, as a vector when not ``dense``."""
    n = state.count
    covariance = state.m2 / jnp.maximum(n - 1.0, 1.0)
    if covariance.ndim == 2 and not dense:
        covariance = jnp.diagonal(covariance)
    shrink = 1e-3 * 5.0 / (n + 5.0)
    if covariance.ndim == 2:
        return (n / (n + 5.0)) * covariance + shrink * jnp.eye(covariance.shape[0], dtype=covariance.dtype)
    return (n / (n + 5.0)) * covariance + shrink


def _largest_whitened_eigenvalue(state: WelfordState, inverse_mass_matrix):
    """lambda_max of the window covariance in the coordinates C^{-1/2} x."""
    covariance = state.m2 / jnp.maximum(state.count - 1.0, 1.0)
    if covariance.ndim == 1:  # only the diagonal is known: it is whitened exactly
        return jnp.max(covariance / inverse_mass_matrix)
    if inverse_mass_matrix.ndim == 1:
        scale = jax.lax.rsqrt(inverse_mass_matrix)
        whitened = covariance * scale[:, None] * scale[None, :]
    else:
        factor = jnp.linalg.cholesky(inverse_mass_matrix)
        half = jax.scipy.linalg.solve_triangular(factor, covariance, lower=True)
        whitened = jax.scipy.linalg.solve_triangular(factor, half.T, lower=True)
    return jnp.linalg.eigvalsh(0.5 * (whitened + whitened.T))[-1]


# --------------------------------------------------------------------------- windows

def window_schedule(num_warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Stan's windows as two boolean arrays over warm-up steps: ``slow[t]`` (step t is in a
    slow window, its draw enters the covariance) and ``window_end[t]`` (the preconditioner
    is updated after step t). Fewer than 20 steps: no slow window (step size only)."""
    slow = np.zeros(num_warmup, bool)
    end = np.zeros(num_warmup, bool)
    if num_warmup < 20:
        return slow, end
    init, term, base = 75, 50, 25
    if init + term + base > num_warmup:
        init, term = int(0.15 * num_warmup), int(0.1 * num_warmup)
        base = num_warmup - init - term
    start, size, last = init, base, num_warmup - term
    while start < last:
        stop = start + size
        if stop + 2 * size > last:
            stop = last
        slow[start:stop] = True
        end[stop - 1] = True
        start, size = stop, 2 * size
    return slow, end


class WindowState(NamedTuple):
    """Adaptation state of one chain: the parameters in use, the step size's dual
    averaging, the current slow window's Welford sums and MALT's trajectory length."""

    params: NamedTuple
    dual_averaging: DualAveragingState
    welford: WelfordState
    trajectory_length: jnp.ndarray


def _with_step(params, step_size, trajectory_length):
    """``params`` at step size h; MALT's L = ceil(trajectory length / h) in [1, 1024]."""
    params = params._replace(step_size=step_size)
    if hasattr(params, "num_integration_steps"):
        steps = jnp.clip(jnp.ceil(trajectory_length / step_size), 1, MAX_INTEGRATION_STEPS)
        params = params._replace(num_integration_steps=steps.astype(jnp.int32))
    return params


def window_init(params, dim: int, *, adapt_mass_matrix: bool, dense_mass: bool) -> WindowState:
    """Adaptation from ``params`` (with ``inverse_mass_matrix`` None: the identity, as a
    vector or, with ``dense_mass``, a matrix); positions have ``dim`` entries flat."""
    dtype = jnp.result_type(float)
    if adapt_mass_matrix:
        current = params.inverse_mass_matrix
        if current is None:
            current = jnp.eye(dim, dtype=dtype) if dense_mass else jnp.ones(dim, dtype)
        elif dense_mass and jnp.ndim(current) == 1:
            current = jnp.diag(current)
        elif not dense_mass and jnp.ndim(current) == 2:
            current = jnp.diagonal(current)
        params = params._replace(inverse_mass_matrix=jnp.asarray(current, dtype))
    trajectory = getattr(params, "num_integration_steps", None)
    trajectory = (jnp.zeros((), dtype) if trajectory is None
                  else trajectory * jnp.asarray(params.step_size, dtype))
    # MALT needs the window's whole covariance for its largest eigenvalue
    dense_sums = adapt_mass_matrix and (dense_mass or hasattr(params, "num_integration_steps"))
    return WindowState(params, dual_averaging_init(params.step_size),
                       _welford_init(dim, dense_sums, dtype), trajectory)


def window_update(state: WindowState, slow, window_end, position_flat, statistic, *,
                  target: float, adapt_step_size: bool, adapt_mass_matrix: bool,
                  dense_mass: bool, axis_name: Optional[str] = None) -> WindowState:
    """One warm-up step of Stan's scheme after a transition that reported ``statistic``
    from a chain now at ``position_flat``. With ``axis_name`` (under ``vmap(...,
    axis_name=...)`` over chains) the statistic and the window's covariance are pooled
    over chains (the ensemble version)."""
    params, da, welford, trajectory = state
    if adapt_step_size:
        if axis_name is not None:
            statistic = jax.lax.pmean(jnp.nan_to_num(statistic, nan=0.0), axis_name)
        da = dual_averaging_update(da, statistic, target)
    if adapt_mass_matrix:
        welford = jax.tree.map(lambda a, b: jnp.where(slow, a, b),
                               _welford_update(welford, position_flat), welford)
    step = jnp.exp(da.log_step) if adapt_step_size else params.step_size

    def close_window(args):
        params, da, welford, trajectory = args
        pooled = welford if axis_name is None else _pool(welford, axis_name)
        inverse_mass_matrix = _regularised_covariance(pooled, dense_mass)
        params = params._replace(inverse_mass_matrix=inverse_mass_matrix)
        if hasattr(params, "num_integration_steps"):
            sigma = jnp.sqrt(_largest_whitened_eigenvalue(pooled, inverse_mass_matrix))
            trajectory = TRAJECTORY_PER_SIGMA * sigma
            params = params._replace(friction=FRICTION_PER_SIGMA / sigma)
        fresh = _welford_init(welford.mean.shape[0], welford.m2.ndim == 2, welford.mean.dtype)
        return params, dual_averaging_init(step) if adapt_step_size else da, fresh, trajectory

    if adapt_mass_matrix:
        params, da, welford, trajectory = jax.lax.cond(
            window_end, close_window, lambda args: args, (params, da, welford, trajectory))
        step = jnp.exp(da.log_step) if adapt_step_size else params.step_size
    return WindowState(_with_step(params, step, trajectory), da, welford, trajectory)


def window_final(state: WindowState, adapt_step_size: bool):
    """The parameters to sample with after warm-up (the averaged step size)."""
    step = adapted_step_size(state.dual_averaging) if adapt_step_size else state.params.step_size
    return _with_step(state.params, step, state.trajectory_length)

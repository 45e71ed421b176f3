"""Step-size adaptation by dual averaging.

Nesterov's primal-dual averaging applied to the log step size so that the mean acceptance
rate reaches a target (Hoffman & Gelman 2014, "The No-U-Turn Sampler", Algorithm 5, with
their defaults gamma = 0.05, t0 = 10, kappa = 0.75 and shrinkage point log(10 h0)).
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


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
    gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75,
) -> DualAveragingState:
    """One update of Hoffman & Gelman (2014), eq. (6): errors are ``target - acceptance``."""
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

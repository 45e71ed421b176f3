"""The Langevin family: ULA, MALA, SGLD and underdamped (kinetic) Langevin.

All target pi(x) ∝ exp(log p(x)) for a log-density ``log p`` over a pytree position, and
discretise the overdamped diffusion dX = grad log p(X) dt + sqrt(2) dW (ULA, MALA, SGLD) or
the kinetic one dX = V dt, dV = grad log p(X) dt - gamma V dt + sqrt(2 gamma) dW.
Step-size convention: x' = x + h grad log p(x) + sqrt(2 h) xi, as in Roberts & Tweedie (1996)
and BlackJAX, so the closed forms in the method notes apply verbatim.
Every ``init`` converts integer and boolean position leaves to the default float dtype and
checks on shapes alone (``jax.eval_shape``, before anything is compiled) that the
log-density accepts the position and returns a scalar (ValueError / TypeError otherwise).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from .base import (
    Algorithm, EmptyInfo, PyTree, as_float, check_positive, check_scalar_logdensity, tree_axpy,
    tree_normal, tree_sqnorm,
)

__all__ = [
    "LangevinState", "MALAInfo", "SGLDState", "SGLDInfo", "KineticState",
    "ula", "mala", "sgld", "underdamped", "minibatch_gradient",
]


class LangevinState(NamedTuple):
    """Position with its log-density and gradient, cached so each step evaluates once."""

    position: PyTree
    logdensity: jax.Array
    logdensity_grad: PyTree


class MALAInfo(NamedTuple):
    """``acceptance_rate``: the Metropolis-Hastings probability min(1, ratio) of the proposal;
    ``is_accepted``: whether it was taken."""

    acceptance_rate: jax.Array
    is_accepted: jax.Array


class SGLDState(NamedTuple):
    """Position and the number of steps taken (drives step-size schedules)."""

    position: PyTree
    count: jax.Array


class SGLDInfo(NamedTuple):
    """The step size used by this step (constant or from the schedule)."""

    step_size: jax.Array


class KineticState(NamedTuple):
    """Position, momentum (velocity for unit mass), and the cached log-density/gradient."""

    position: PyTree
    momentum: PyTree
    logdensity: jax.Array
    logdensity_grad: PyTree


def _langevin_init(logdensity_fn: Callable) -> Callable:
    value_and_grad = jax.value_and_grad(logdensity_fn)

    def init(position: PyTree, key=None) -> LangevinState:
        del key
        position = as_float(position)  # integer/bool leaves -> the default float dtype
        check_scalar_logdensity("logdensity_fn", logdensity_fn, position,
                                position_name="initial_position")
        logdensity, grad = value_and_grad(position)
        return LangevinState(position, logdensity, grad)

    return init


def _langevin_move(key, state: LangevinState, step_size, temperature=1.0) -> PyTree:
    """x + h grad log p(x) + sqrt(2 h T) xi."""
    noise = tree_normal(key, state.position)
    drift = tree_axpy(step_size, state.logdensity_grad, state.position)
    return tree_axpy(jnp.sqrt(2.0 * step_size * temperature), noise, drift)


def ula(logdensity_fn: Callable, step_size: float, temperature: float = 1.0) -> Algorithm:
    """Unadjusted Langevin algorithm: x' = x + h grad log p(x) + sqrt(2 h T) xi.

    Biased for every h > 0: on N(0, s^2) its stationary variance is s^2 / (1 - h / (2 s^2))
    (Roberts & Tweedie 1996); for alpha-strongly log-concave, beta-smooth targets and
    h <= 2 / (alpha + beta), W2 to pi contracts by (1 - alpha h) per step up to an
    O(kappa sqrt(h d)) bias (Dalalyan & Karagulyan 2019, Theorem 1).

    Args:
      logdensity_fn: position pytree -> scalar log-density (up to a constant).
      step_size: h > 0.
      temperature: T > 0; samples exp(log p / T).
    """
    check_positive("step_size", step_size)
    check_positive("temperature", temperature)
    value_and_grad = jax.value_and_grad(logdensity_fn)

    def kernel(key, state: LangevinState, batch=None, step_size=step_size):
        del batch
        position = _langevin_move(key, state, step_size, temperature)
        logdensity, grad = value_and_grad(position)
        return LangevinState(position, logdensity, grad), EmptyInfo()

    return Algorithm(_langevin_init(logdensity_fn), kernel, None, float(step_size), "ula")


def _log_proposal(to_position, from_state: LangevinState, step_size) -> jax.Array:
    """log q(to | from) for the Langevin proposal, up to a constant: -|to - mean|^2 / (4 h)."""
    mean = tree_axpy(step_size, from_state.logdensity_grad, from_state.position)
    diff = jax.tree.map(jnp.subtract, to_position, mean)
    return -tree_sqnorm(diff) / (4.0 * step_size)


def mala(logdensity_fn: Callable, step_size: float) -> Algorithm:
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996, eq. 2.3-2.4).

    The ULA move is a proposal y, accepted with probability
    min(1, p(y) q(x | y) / (p(x) q(y | x))), q(y | x) = N(y; x + h grad log p(x), 2h I):
    pi is invariant for every h. Acceptance ≈ 0.574 is optimal as d -> inf
    (Roberts & Rosenthal 1998), the default target of warm-up adaptation.

    Args:
      logdensity_fn: position pytree -> scalar log-density (up to a constant).
      step_size: h > 0 (the initial value when adapted during warm-up).
    """
    check_positive("step_size", step_size)
    value_and_grad = jax.value_and_grad(logdensity_fn)

    def kernel(key, state: LangevinState, batch=None, step_size=step_size):
        del batch
        key_move, key_accept = jax.random.split(key)
        position = _langevin_move(key_move, state, step_size)
        logdensity, grad = value_and_grad(position)
        proposal = LangevinState(position, logdensity, grad)
        log_ratio = (logdensity - state.logdensity
                     + _log_proposal(state.position, proposal, step_size)
                     - _log_proposal(position, state, step_size))
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        acceptance_rate = jnp.exp(jnp.minimum(log_ratio, 0.0))
        is_accepted = jnp.log(jax.random.uniform(key_accept)) < log_ratio
        new_state = jax.tree.map(functools.partial(jnp.where, is_accepted), proposal, state)
        return new_state, MALAInfo(acceptance_rate, is_accepted)

    return Algorithm(_langevin_init(logdensity_fn), kernel, kernel, float(step_size), "mala")


def sgld(grad_estimator: Callable, step_size, temperature: float = 1.0) -> Algorithm:
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011, eq. 4).

    x' = x + h_k g(x, batch_k) + sqrt(2 h_k T) xi with g an unbiased estimate of
    grad log p, e.g. :func:`minibatch_gradient`. A constant step leaves an O(h) bias that
    includes the gradient noise (Vollmer, Zygalakis & Teh 2016); a schedule h_k with
    sum h_k = inf, sum h_k^2 < inf is consistent (Teh, Thiery & Vollmer 2016).

    Args:
      grad_estimator: (position, batch) -> estimate of grad log p(position).
      step_size: h > 0, or a schedule ``count -> h_k`` (a jittable function).
      temperature: T > 0.
    """
    check_positive("step_size", step_size, allow_callable=True)
    check_positive("temperature", temperature)
    schedule = step_size if callable(step_size) else (lambda count: step_size)

    def init(position, key=None) -> SGLDState:
        del key
        return SGLDState(as_float(position), jnp.zeros((), jnp.int32))

    def step(key, state: SGLDState, batch=None):
        h = jnp.asarray(schedule(state.count), dtype=jnp.result_type(float))
        grad = grad_estimator(state.position, batch)
        noise = tree_normal(key, state.position)
        position = tree_axpy(jnp.sqrt(2.0 * h * temperature), noise,
                             tree_axpy(h, grad, state.position))
        return SGLDState(position, state.count + 1), SGLDInfo(h)

    return Algorithm(init, step, None, None if callable(step_size) else float(step_size), "sgld")


def minibatch_gradient(
    logprior_fn: Callable, loglik_fn: Callable, data_size: int,
    *, centre: Optional[PyTree] = None, data: Optional[PyTree] = None,
) -> Callable:
    """Unbiased minibatch estimate of grad log p for p(x) ∝ prior(x) prod_i lik(x, datum_i).

    g(x, batch) = grad log prior(x) + (N / n) sum_{i in batch} grad log lik(x, datum_i).
    With ``centre`` (e.g. a posterior mode) and the full ``data``, the control-variate
    estimator of Baker, Fearnhead, Fox & Nemeth (2019, eq. 4) is returned instead:
    g(x, batch) = grad log p(centre) + (N / n) sum_batch [grad log lik(x) - grad log lik(centre)]
    + grad log prior(x) - grad log prior(centre), whose variance vanishes as x -> centre.

    Args:
      logprior_fn: position -> scalar log prior.
      loglik_fn: (position, datum) -> scalar log-likelihood of one datum.
      data_size: N, the number of data points in the full data set.
      centre, data: both or neither (control variate).
    """
    if int(data_size) != data_size or data_size < 1:
        raise ValueError(f"data_size must be a positive integer, got {data_size!r}")
    if (centre is None) != (data is None):
        raise ValueError("centre and data must be given together (control variate), got "
                         f"centre={'None' if centre is None else 'given'}, "
                         f"data={'None' if data is None else 'given'}")
    grad_prior = jax.grad(logprior_fn)
    # the gradient of the summed batch log-likelihood: no (n, d) array of per-datum gradients
    batch_sum = jax.grad(lambda position, batch: jnp.sum(jax.vmap(loglik_fn, (None, 0))(position, batch)))

    def scaled_batch_grad(position, batch):
        n = jax.tree.leaves(batch)[0].shape[0]
        return jax.tree.map(lambda g: (data_size / n) * g, batch_sum(position, batch))

    def plain(position, batch):
        return jax.tree.map(jnp.add, grad_prior(position), scaled_batch_grad(position, batch))

    if centre is None:
        return plain
    full_at_centre = jax.tree.map(jnp.add, grad_prior(centre), batch_sum(centre, data))

    def control_variate(position, batch):
        correction = jax.tree.map(jnp.subtract, plain(position, batch), plain(centre, batch))
        return jax.tree.map(jnp.add, full_at_centre, correction)

    return control_variate


def underdamped(logdensity_fn: Callable, step_size: float, friction: float = 1.0,
                scheme: str = "baoab") -> Algorithm:
    """Underdamped (kinetic) Langevin dynamics with unit mass, by a second-order splitting.

    Splits dX = V dt, dV = grad log p(X) dt - gamma V dt + sqrt(2 gamma) dW into
    B (kick by grad log p), A (drift of X) and O (exact Ornstein-Uhlenbeck on V,
    V <- c V + sqrt(1 - c^2) xi, c = exp(-gamma h)), composed as BAOAB or OBABO
    (Leimkuhler & Matthews 2013; "Molecular Dynamics", 2015, ch. 7). Both are second order
    in the invariant law; on a Gaussian BAOAB's position marginal is exact, OBABO's velocity
    marginal is exact. One gradient evaluation per step.

    Args:
      logdensity_fn: position pytree -> scalar log-density.
      step_size: h > 0.
      friction: gamma > 0.
      scheme: "baoab" or "obabo".
    """
    check_positive("step_size", step_size)
    check_positive("friction", friction)
    if scheme not in ("baoab", "obabo"):
        raise ValueError(f"scheme must be 'baoab' or 'obabo', got {scheme!r}")
    value_and_grad = jax.value_and_grad(logdensity_fn)
    h = float(step_size)
    c = jnp.exp(-friction * h)
    s = jnp.sqrt(-jnp.expm1(-2.0 * friction * h))

    def init(position, key=None) -> KineticState:
        position = as_float(position)
        check_scalar_logdensity("logdensity_fn", logdensity_fn, position,
                                position_name="initial_position")
        logdensity, grad = value_and_grad(position)
        momentum = (jax.tree.map(jnp.zeros_like, position) if key is None
                    else tree_normal(key, position))
        return KineticState(position, momentum, logdensity, grad)

    def kick(state, dt):  # B
        return state._replace(momentum=tree_axpy(dt, state.logdensity_grad, state.momentum))

    def drift(state, dt):  # A (gradient refreshed by the caller when needed)
        return state._replace(position=tree_axpy(dt, state.momentum, state.position))

    def refresh(state):
        logdensity, grad = value_and_grad(state.position)
        return state._replace(logdensity=logdensity, logdensity_grad=grad)

    def thermostat(key, state):  # O
        noise = tree_normal(key, state.momentum)
        return state._replace(momentum=tree_axpy(s, noise, jax.tree.map(lambda v: c * v, state.momentum)))

    def step(key, state: KineticState, batch=None):
        del batch
        if scheme == "baoab":
            state = drift(kick(state, h / 2), h / 2)
            state = refresh(drift(thermostat(key, state), h / 2))
            return kick(state, h / 2), EmptyInfo()
        key_1, key_2 = jax.random.split(key)
        state = kick(thermostat(key_1, state), h / 2)
        state = refresh(drift(state, h))
        return thermostat(key_2, kick(state, h / 2)), EmptyInfo()

    return Algorithm(init, step, None, h, f"underdamped_{scheme}")

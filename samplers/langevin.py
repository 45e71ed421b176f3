"""The Langevin family: ULA, MALA, SGLD, underdamped (kinetic) Langevin and MALT.

All target pi(x) ∝ exp(log p(x)) for a log-density ``log p`` over a pytree position, and
discretise the overdamped diffusion dX = C grad log p(X) dt + sqrt(2) C^{1/2} dW (ULA, MALA,
SGLD) or the kinetic one dX = C P dt, dP = grad log p(X) dt - gamma P dt + sqrt(2 gamma)
C^{-1/2} dW (underdamped, MALT), both with invariant law pi for any symmetric positive
definite preconditioner C, the ``inverse_mass_matrix`` (identity when None; a vector for a
diagonal C, a (d, d) matrix for a dense one, over the flattened position, as in BlackJAX).
Step-size convention: x' = x + h C grad log p(x) + sqrt(2 h) C^{1/2} xi, as in [Roberts1996]
and BlackJAX, so the Gaussian closed forms of docs/langevin.md apply verbatim.

Momenta are kept whitened: w = L^T p with L L^T = C (L = sqrt(C) for a diagonal C, the
Cholesky factor for a dense one), so a kinetic step needs products with L and L^T only
(A: x += dt L w; B: w += dt L^T grad log p; O: w <- c w + sqrt(1 - c^2) xi) and the kinetic
energy is |w|^2 / 2 whatever C is.

The tunable parameters (step size, inverse mass matrix, friction, trajectory length) are
``algorithm.params``, a NamedTuple of arrays that ``algorithm.kernel(key, state, batch,
params)`` takes at call time: warm-up adaptation changes them inside one compiled loop and
rebuilding an algorithm with new values compiles nothing again.

Every ``init`` converts integer and boolean position leaves to the default float dtype and
checks on shapes alone (``jax.eval_shape``, before anything is compiled) that the
log-density accepts the position and returns a scalar (ValueError / TypeError otherwise).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .base import Algorithm, Bound, PyTree, as_float, tree_normal, with_params
from .validation import (ScalarOrSchedule, check_choice, check_int, check_positive,
                         check_scalar_logdensity, check_step_size, check_traced)

__all__ = [
    "LangevinState", "LangevinParams", "KineticParams", "MALTParams", "MALAInfo", "MALTInfo",
    "UnadjustedInfo", "SGLDState", "SGLDInfo", "KineticState",
    "ula", "mala", "sgld", "underdamped", "malt", "minibatch_gradient",
]

DIVERGENCE_THRESHOLD = 1000.0
"""A transition whose energy error exceeds this (or is not finite) is rejected and flagged
``diverging``, as in Stan and NumPyro."""

MAX_INTEGRATION_STEPS = 1024
"""The most integration steps a MALT trajectory takes (NUTS's default tree depth 10 allows
1023)."""


class LangevinState(NamedTuple):
    """Position with its log-density and gradient, cached so each step evaluates once."""

    position: PyTree
    logdensity: jax.Array
    logdensity_grad: PyTree


class KineticState(NamedTuple):
    """Position, whitened momentum w = L^T p (standard normal at equilibrium whatever the
    mass matrix), and the cached log-density/gradient."""

    position: PyTree
    momentum: PyTree
    logdensity: jax.Array
    logdensity_grad: PyTree


class LangevinParams(NamedTuple):
    """Parameters of ULA, MALA and SGLD: ``step_size`` h and ``inverse_mass_matrix`` C
    (None: identity; (d,): diagonal; (d, d): dense)."""

    step_size: jax.Array
    inverse_mass_matrix: Optional[jax.Array] = None


class KineticParams(NamedTuple):
    """Parameters of the underdamped sampler: ``step_size``, ``inverse_mass_matrix``, ``friction``."""

    step_size: jax.Array
    inverse_mass_matrix: Optional[jax.Array]
    friction: jax.Array


class MALTParams(NamedTuple):
    """Parameters of MALT: ``step_size`` h, ``inverse_mass_matrix`` C, the number L of OBABO
    steps per trajectory and the ``friction`` gamma."""

    step_size: jax.Array
    inverse_mass_matrix: Optional[jax.Array]
    num_integration_steps: jax.Array
    friction: jax.Array


class MALAInfo(NamedTuple):
    """``acceptance_rate``: the Metropolis-Hastings probability min(1, ratio) of the proposal;
    ``is_accepted``: whether it was taken; ``energy_error``: -log ratio; ``diverging``: the
    energy error exceeded :data:`DIVERGENCE_THRESHOLD` or was not finite (rejected)."""

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    energy_error: jax.Array
    diverging: jax.Array


class MALTInfo(NamedTuple):
    """As :class:`MALAInfo`, for a whole trajectory, and the ``num_integration_steps`` it
    took (fewer than L when it diverged: it stops there)."""

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    energy_error: jax.Array
    diverging: jax.Array
    num_integration_steps: jax.Array


class UnadjustedInfo(NamedTuple):
    """``energy_error`` of an unadjusted step: minus the log Metropolis-Hastings ratio the
    step would have as a proposal (ULA), or the energy error of its deterministic (B, A)
    parts (underdamped). Not used by the step; warm-up tunes the step size from it."""

    energy_error: jax.Array


# ----------------------------------------------------------------------- preconditioner

class _Metric(NamedTuple):
    scale: Callable  # v -> L v  (whitened momentum -> velocity; noise with covariance C)
    scale_t: Callable  # v -> L^T v  (gradient -> whitened momentum units)


def _metric(inverse_mass_matrix, flat_position) -> _Metric:
    """L with L L^T = C for the preconditioner C (identity when None), on flat vectors."""
    d = flat_position.shape[0]
    if inverse_mass_matrix is None:
        return _Metric(lambda v: v, lambda v: v)
    c = jnp.asarray(inverse_mass_matrix, flat_position.dtype)
    if c.shape not in ((d,), (d, d)):
        raise ValueError(f"inverse_mass_matrix must have shape ({d},) (diagonal) or ({d}, {d}) "
                         f"(dense) for a position with {d} entries, got shape {c.shape}")
    if c.ndim == 1:
        root = jnp.sqrt(c)
        return _Metric(lambda v: root * v, lambda v: root * v)
    factor = jnp.linalg.cholesky(c)
    return _Metric(lambda v: factor @ v, lambda v: v @ factor)


def _check_inverse_mass_matrix(inverse_mass_matrix):
    """Checks at build time: a positive vector or a symmetric positive definite matrix
    (run on the host when the program reaches them if the matrix is traced; shapes against
    the position are checked when the kernel is traced)."""
    if inverse_mass_matrix is None:
        return None
    check_traced(_check_inverse_mass_matrix_values, inverse_mass_matrix)
    return jnp.asarray(inverse_mass_matrix, jnp.result_type(float))


def _check_inverse_mass_matrix_values(inverse_mass_matrix):
    c = np.asarray(inverse_mass_matrix, dtype=np.float64)
    if c.ndim == 1:
        if not (np.all(np.isfinite(c)) and np.all(c > 0)):
            raise ValueError("inverse_mass_matrix as a vector (a diagonal) must hold finite "
                             f"entries > 0, got {inverse_mass_matrix!r}")
    elif c.ndim == 2 and c.shape[0] == c.shape[1]:
        if not np.allclose(c, c.T, rtol=1e-5, atol=1e-8 * np.abs(c).max()):
            raise ValueError("inverse_mass_matrix as a matrix must be symmetric")
        try:
            np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            raise ValueError("inverse_mass_matrix as a matrix must be positive definite, got "
                             f"eigenvalues down to {np.linalg.eigvalsh(c).min():.3g}") from None
    else:
        raise ValueError("inverse_mass_matrix must be None, a vector (diagonal) or a square "
                         f"matrix, got an array of shape {c.shape}")


def _float(value):
    return jnp.asarray(value, jnp.result_type(float))


def _flat_value_and_grad(logdensity_fn, unravel):
    def flat_logdensity(x):
        return logdensity_fn(unravel(x))

    return jax.value_and_grad(flat_logdensity)


def _sq(v):
    return jnp.dot(v, v)


# ------------------------------------------------------------------------- overdamped

def _langevin_init(logdensity_fn, position, key=None) -> LangevinState:
    del key
    position = as_float(position)  # integer/bool leaves -> the default float dtype
    check_scalar_logdensity("logdensity_fn", logdensity_fn, position,
                            position_name="initial_position")
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    return LangevinState(position, logdensity, grad)


def _overdamped_move(logdensity_fn, key, state: LangevinState, step_size, inverse_mass_matrix,
                     temperature=1.0):
    """The move y = x + h C g(x) + sqrt(2 h T) L xi with its state, and its energy error:
    minus the log Metropolis-Hastings ratio of y as a proposal for exp(log p / T),
    (log p(x) - log p(y)) / T + |w|^2 / 2 - |xi|^2 / 2 with w = xi + sqrt(h / (2T)) L^T
    (g(x) + g(y)) (the momentum form of q(x | y) / q(y | x): MALA is one leapfrog step of
    HMC with epsilon^2 = 2 h T), which needs no inverse of C.

    With the move s = y - x - h C g(x) = sqrt(2 h T) L xi and g+ = g(x) + g(y),
    |w|^2 / 2 - |xi|^2 / 2 = [s.g+ / 2 + h |L^T g+|^2 / 4] / T, so the energy error reads xi
    only through y. (XLA fuses the normal draw's inverse-erf polynomial into every consumer
    of xi: with xi used again after the gradient it was computed five times, and MALA ran
    at 0.72x BlackJAX's speed at d = 1000; about 1.0x in this form.)"""
    x, unravel = ravel_pytree(state.position)
    metric = _metric(inverse_mass_matrix, x)
    grad_x = ravel_pytree(state.logdensity_grad)[0]
    drift = step_size * metric.scale(metric.scale_t(grad_x))
    xi = jax.random.normal(key, x.shape, x.dtype)
    y = x + drift + jnp.sqrt(2.0 * step_size * temperature) * metric.scale(xi)
    position = unravel(y)
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    grad_sum = grad_x + ravel_pytree(grad)[0]
    energy_error = ((state.logdensity - logdensity) + 0.5 * jnp.dot(y - x - drift, grad_sum)
                    + 0.25 * step_size * _sq(metric.scale_t(grad_sum))) / temperature
    return LangevinState(position, logdensity, grad), energy_error


def _metropolis(key, energy_error, proposal, state):
    """Accept ``proposal`` with probability min(1, exp(-energy_error)); a divergent energy
    error (above the threshold or not finite) is rejected and flagged."""
    diverging = ~(energy_error <= DIVERGENCE_THRESHOLD)
    log_ratio = jnp.where(diverging, -jnp.inf, -energy_error)
    acceptance_rate = jnp.exp(jnp.minimum(log_ratio, 0.0))
    is_accepted = jnp.log(jax.random.uniform(key)) < log_ratio
    new_state = jax.tree.map(lambda a, b: jnp.where(is_accepted, a, b), proposal, state)
    return new_state, acceptance_rate, is_accepted, diverging


def _ula_kernel(logdensity_fn, temperature, key, state, batch, params: LangevinParams):
    del batch
    new_state, energy_error = _overdamped_move(logdensity_fn, key, state, params.step_size,
                                               params.inverse_mass_matrix, temperature)
    return new_state, UnadjustedInfo(energy_error)


def _mala_kernel(logdensity_fn, key, state, batch, params: LangevinParams):
    del batch
    key_move, key_accept = jax.random.split(key)
    proposal, energy_error = _overdamped_move(logdensity_fn, key_move, state, params.step_size,
                                              params.inverse_mass_matrix)
    new_state, rate, accepted, diverging = _metropolis(key_accept, energy_error, proposal, state)
    return new_state, MALAInfo(rate, accepted, energy_error, diverging)


def ula(logdensity_fn: Callable, step_size: float, temperature: float = 1.0,
        inverse_mass_matrix=None) -> Algorithm:
    """Unadjusted Langevin algorithm: x' = x + h C grad log p(x) + sqrt(2 h T) C^{1/2} xi.

    Biased for every h > 0: on N(0, s^2) its stationary variance is s^2 / (1 - h / (2 s^2))
    (elementary: the AR(1) recursion of ULA on a Gaussian); for alpha-strongly log-concave,
    beta-smooth targets and h <= 2 / (alpha + beta), W2 to pi contracts by (1 - alpha h) per
    step up to an O(kappa sqrt(h d)) bias [Dalalyan2019, Theorem 1]. With a preconditioner
    C the same holds for the target in the coordinates C^{-1/2} x.

    Args:
      logdensity_fn: position pytree -> scalar log-density (up to a constant).
      step_size: h > 0.
      temperature: T > 0; samples exp(log p / T).
      inverse_mass_matrix: C: None (identity), a vector (diagonal) or a matrix (dense).
    """
    check_positive("step_size", step_size)
    check_positive("temperature", temperature)
    params = LangevinParams(_float(step_size), _check_inverse_mass_matrix(inverse_mass_matrix))
    kernel = Bound(_ula_kernel, (logdensity_fn, float(temperature)))
    return Algorithm(Bound(_langevin_init, (logdensity_fn,)), with_params(kernel, params),
                     kernel, params, "ula")


def mala(logdensity_fn: Callable, step_size: float, inverse_mass_matrix=None) -> Algorithm:
    """Metropolis-adjusted Langevin algorithm [Roberts1996, eq. 2.3-2.4].

    The ULA move is a proposal y, accepted with probability
    min(1, p(y) q(x | y) / (p(x) q(y | x))), q(y | x) = N(y; x + h C grad log p(x), 2h C):
    pi is invariant for every h and every preconditioner C. Acceptance ≈ 0.574 is optimal
    as d -> inf [Roberts1998], the default target of warm-up adaptation.

    Args:
      logdensity_fn: position pytree -> scalar log-density (up to a constant).
      step_size: h > 0 (the initial value when adapted during warm-up).
      inverse_mass_matrix: C: None (identity), a vector (diagonal) or a matrix (dense); the
        initial value when adapted during warm-up.
    """
    check_positive("step_size", step_size)
    params = LangevinParams(_float(step_size), _check_inverse_mass_matrix(inverse_mass_matrix))
    kernel = Bound(_mala_kernel, (logdensity_fn,))
    return Algorithm(Bound(_langevin_init, (logdensity_fn,)), with_params(kernel, params),
                     kernel, params, "mala")


class SGLDState(NamedTuple):
    """Position and the number of steps taken (drives step-size schedules)."""

    position: PyTree
    count: jax.Array


class SGLDInfo(NamedTuple):
    """The step size used by this step (constant or from the schedule)."""

    step_size: jax.Array


def _sgld_init(position, key=None) -> SGLDState:
    del key
    return SGLDState(as_float(position), jnp.zeros((), jnp.int32))


def _sgld_kernel(grad_estimator, schedule, temperature, key, state: SGLDState, batch,
                 params: LangevinParams):
    h = params.step_size if schedule is None else schedule(state.count)
    h = jnp.asarray(h, dtype=jnp.result_type(float))
    x, unravel = ravel_pytree(state.position)
    metric = _metric(params.inverse_mass_matrix, x)
    grad = ravel_pytree(grad_estimator(state.position, batch))[0]
    xi = jax.random.normal(key, x.shape, x.dtype)
    y = x + h * metric.scale(metric.scale_t(grad)) + jnp.sqrt(2.0 * h * temperature) * metric.scale(xi)
    return SGLDState(unravel(y), state.count + 1), SGLDInfo(h)


def sgld(grad_estimator: Callable, step_size: ScalarOrSchedule, temperature: float = 1.0,
         inverse_mass_matrix=None) -> Algorithm:
    """Stochastic gradient Langevin dynamics [Welling2011, eq. 4].

    x' = x + h_k C g(x, batch_k) + sqrt(2 h_k T) C^{1/2} xi with g an unbiased estimate of
    grad log p, e.g. :func:`minibatch_gradient`, and C the preconditioner (identity when
    None). A constant step leaves an O(h) bias that includes the gradient noise
    [Vollmer2016]; a schedule h_k with sum h_k = inf, sum h_k^2 < inf is consistent
    [Teh2016].

    Args:
      grad_estimator: (position, batch) -> estimate of grad log p(position).
      step_size: h > 0, or a schedule ``count -> h_k`` (a jittable function).
      temperature: T > 0.
      inverse_mass_matrix: C: None (identity), a vector (diagonal) or a matrix (dense).
    """
    check_step_size("step_size", step_size)
    check_positive("temperature", temperature)
    schedule = step_size if callable(step_size) else None
    params = LangevinParams(None if schedule is not None else _float(step_size),
                            _check_inverse_mass_matrix(inverse_mass_matrix))
    kernel = Bound(_sgld_kernel, (grad_estimator, schedule, float(temperature)))
    return Algorithm(Bound(_sgld_init), with_params(kernel, params), kernel, params, "sgld")


def minibatch_gradient(
    logprior_fn: Callable, loglik_fn: Callable, data_size: int,
    *, centre: Optional[PyTree] = None, data: Optional[PyTree] = None,
) -> Callable:
    """Unbiased minibatch estimate of grad log p for p(x) ∝ prior(x) prod_i lik(x, datum_i).

    g(x, batch) = grad log prior(x) + (N / n) sum_{i in batch} grad log lik(x, datum_i).
    With ``centre`` (e.g. a posterior mode) and the full ``data``, the control-variate
    estimator of [Baker2019, eq. 4] is returned instead:
    g(x, batch) = grad log p(centre) + (N / n) sum_batch [grad log lik(x) - grad log lik(centre)]
    + grad log prior(x) - grad log prior(centre), whose variance vanishes as x -> centre.

    Args:
      logprior_fn: position -> scalar log prior.
      loglik_fn: (position, datum) -> scalar log-likelihood of one datum.
      data_size: N, the number of data points in the full data set.
      centre, data: both or neither (control variate).
    """
    data_size = check_int("data_size", data_size)
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


def _kinetic_init(logdensity_fn, position, key=None) -> KineticState:
    position = as_float(position)
    check_scalar_logdensity("logdensity_fn", logdensity_fn, position,
                            position_name="initial_position")
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    momentum = (jax.tree.map(jnp.zeros_like, position) if key is None
                else tree_normal(key, position))
    return KineticState(position, momentum, logdensity, grad)


def _underdamped_kernel(logdensity_fn, scheme, key, state: KineticState, batch,
                        params: KineticParams):
    del batch
    h, gamma = params.step_size, params.friction
    x, unravel = ravel_pytree(state.position)
    w = ravel_pytree(state.momentum)[0]
    g = ravel_pytree(state.logdensity_grad)[0]
    metric = _metric(params.inverse_mass_matrix, x)
    value_and_grad = _flat_value_and_grad(logdensity_fn, unravel)
    kinetic_0 = 0.5 * _sq(w)
    if scheme == "baoab":  # B(h/2) A(h/2) O(h) A(h/2) B(h/2)
        c, s = jnp.exp(-gamma * h), jnp.sqrt(-jnp.expm1(-2.0 * gamma * h))
        w = w + 0.5 * h * metric.scale_t(g)
        x = x + 0.5 * h * metric.scale(w)
        heat = -0.5 * _sq(w)
        w = c * w + s * jax.random.normal(key, x.shape, x.dtype)
        heat = heat + 0.5 * _sq(w)
        x = x + 0.5 * h * metric.scale(w)
        logdensity, g = value_and_grad(x)
        w = w + 0.5 * h * metric.scale_t(g)
    else:  # O(h/2) B(h/2) A(h) B(h/2) O(h/2)
        c, s = jnp.exp(-0.5 * gamma * h), jnp.sqrt(-jnp.expm1(-gamma * h))
        key_1, key_2 = jax.random.split(key)
        w = c * w + s * jax.random.normal(key_1, x.shape, x.dtype)
        heat = 0.5 * _sq(w) - kinetic_0
        w = w + 0.5 * h * metric.scale_t(g)
        x = x + h * metric.scale(w)
        logdensity, g = value_and_grad(x)
        w = w + 0.5 * h * metric.scale_t(g)
        kinetic = 0.5 * _sq(w)
        w = c * w + s * jax.random.normal(key_2, x.shape, x.dtype)
        heat = heat + 0.5 * _sq(w) - kinetic
    # the energy change of the deterministic (B, A) parts: the total minus the O parts' heat
    energy_error = (state.logdensity - logdensity) + 0.5 * _sq(w) - kinetic_0 - heat
    new_state = KineticState(unravel(x), unravel(w), logdensity, unravel(g))
    return new_state, UnadjustedInfo(energy_error)


def underdamped(logdensity_fn: Callable, step_size: float, friction: float = 1.0,
                scheme: str = "baoab", inverse_mass_matrix=None) -> Algorithm:
    """Underdamped (kinetic) Langevin dynamics, by a second-order splitting.

    Splits dX = C P dt, dP = grad log p(X) dt - gamma P dt + sqrt(2 gamma) C^{-1/2} dW into
    B (kick by grad log p), A (drift of X) and O (exact Ornstein-Uhlenbeck on the momentum,
    w <- c w + sqrt(1 - c^2) xi, c = exp(-gamma dt)), composed as BAOAB (one O of length h)
    or OBABO (two of length h/2) [Leimkuhler2013; Leimkuhler2015,
    ch. 7]. Both are second order in the invariant law; on a Gaussian BAOAB's position
    marginal is exact, OBABO's velocity marginal is exact. One gradient evaluation per step.
    Unadjusted: for an exact sampler with the same dynamics see :func:`malt`.

    Args:
      logdensity_fn: position pytree -> scalar log-density.
      step_size: h > 0.
      friction: gamma > 0.
      scheme: "baoab" or "obabo".
      inverse_mass_matrix: C: None (identity), a vector (diagonal) or a matrix (dense).
    """
    check_positive("step_size", step_size)
    check_positive("friction", friction)
    check_choice("scheme", scheme, ("baoab", "obabo"))
    params = KineticParams(_float(step_size), _check_inverse_mass_matrix(inverse_mass_matrix),
                           _float(friction))
    kernel = Bound(_underdamped_kernel, (logdensity_fn, scheme))
    return Algorithm(Bound(_kinetic_init, (logdensity_fn,)), with_params(kernel, params), kernel,
                     params, f"underdamped_{scheme}")


# ------------------------------------------------------------------------------- MALT

def _malt_trajectory(value_and_grad, metric, key, x, logdensity, g, h, gamma, num_steps):
    """L OBABO steps from (x, w ~ N(0, I)) and the summed energy error of their B-A-B parts
    [RiouDurand2022, Algorithm 1]: the O parts leave the Gaussian momentum law
    invariant and drop out of the acceptance ratio. The momentum is discarded afterwards
    (fully refreshed by the next trajectory), so the first and last half O steps are
    omitted and the two half O steps between consecutive B-A-B parts are one O of length
    h. Stops early once the energy error diverges."""
    c, s = jnp.exp(-gamma * h), jnp.sqrt(-jnp.expm1(-2.0 * gamma * h))
    key_momentum, key_noise = jax.random.split(key)
    w = jax.random.normal(key_momentum, x.shape, x.dtype)
    draw = lambda i: jax.random.normal(jax.random.fold_in(key_noise, i), x.shape, x.dtype)  # noqa: E731

    def cond(carry):
        i, _, _, _, _, energy, _ = carry
        return (i < num_steps) & (energy <= DIVERGENCE_THRESHOLD)

    def body(carry):
        # step i's noise comes in the carry, drawn by step i - 1: a loop-carried array is
        # stored once, where a draw made here would be recomputed inside each of w's
        # consumers (XLA fuses the normal's inverse-erf polynomial into every one)
        i, x, w, logdensity, g, energy, noise = carry
        w = jnp.where(i > 0, c * w + s * noise, w)
        energy = energy - 0.5 * _sq(w) + logdensity
        w = w + 0.5 * h * metric.scale_t(g)
        x = x + h * metric.scale(w)
        logdensity, g = value_and_grad(x)
        w = w + 0.5 * h * metric.scale_t(g)
        energy = energy + 0.5 * _sq(w) - logdensity
        return i + 1, x, w, logdensity, g, energy, draw(i + 1)

    zero = jnp.zeros((), logdensity.dtype)
    i, x, _, logdensity, g, energy, _ = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), x, w, logdensity, g, zero, jnp.zeros_like(x)))
    return x, logdensity, g, energy, i


def _malt_kernel(logdensity_fn, key, state: LangevinState, batch, params: MALTParams):
    del batch
    x, unravel = ravel_pytree(state.position)
    metric = _metric(params.inverse_mass_matrix, x)
    key_trajectory, key_accept = jax.random.split(key)
    x, logdensity, g, energy_error, steps = _malt_trajectory(
        _flat_value_and_grad(logdensity_fn, unravel), metric, key_trajectory, x,
        state.logdensity, ravel_pytree(state.logdensity_grad)[0], params.step_size,
        params.friction, params.num_integration_steps)
    proposal = LangevinState(unravel(x), logdensity, unravel(g))
    new_state, rate, accepted, diverging = _metropolis(key_accept, energy_error, proposal, state)
    return new_state, MALTInfo(rate, accepted, energy_error, diverging, steps)


def malt(logdensity_fn: Callable, step_size: float, num_integration_steps: Optional[int] = None,
         friction: float = 1.0, inverse_mass_matrix=None) -> Algorithm:
    """Metropolis-adjusted Langevin trajectories [RiouDurand2022,
    Algorithm 1]: a fresh momentum, L steps of the OBABO splitting of underdamped Langevin
    dynamics (friction gamma, preconditioner C), then one Metropolis-Hastings test of the
    end point on the summed energy error of the B-A-B parts; on rejection the chain stays.

    pi is invariant for every h, L and gamma (the paper's Theorem 1). gamma -> 0 is HMC
    with L leapfrog steps; L = 1 is MALA with step h^2 / 2. Unlike HMC, the friction keeps a
    long trajectory from returning where it started, so no U-turn criterion is needed. In
    ``samplers.run`` and the NumPyro kernel, warm-up tunes h (dual averaging to the target
    acceptance), C, the trajectory length L h and gamma (:mod:`samplers.adaptation`).
    A trajectory whose energy error exceeds :data:`DIVERGENCE_THRESHOLD` stops there, is
    rejected and flagged ``diverging``.

    Args:
      logdensity_fn: position pytree -> scalar log-density (up to a constant).
      step_size: h > 0.
      num_integration_steps: L >= 1 (at most 1024); default: the trajectory length L h = 1.
      friction: gamma > 0.
      inverse_mass_matrix: C: None (identity), a vector (diagonal) or a matrix (dense).
    """
    check_positive("step_size", step_size)
    check_positive("friction", friction)
    if num_integration_steps is None:
        num_integration_steps = min(MAX_INTEGRATION_STEPS, max(1, math.ceil(1.0 / step_size)))
    check_int("num_integration_steps", num_integration_steps, maximum=MAX_INTEGRATION_STEPS)
    params = MALTParams(_float(step_size), _check_inverse_mass_matrix(inverse_mass_matrix),
                        jnp.asarray(num_integration_steps, jnp.int32), _float(friction))
    kernel = Bound(_malt_kernel, (logdensity_fn,))
    return Algorithm(Bound(_langevin_init, (logdensity_fn,)), with_params(kernel, params), kernel,
                     params, "malt")

"""Parameter learning with PaRIS particle Gibbs: score ascent and Markov score climbing.

Fisher's identity [Cappe2005, Prop. 10.1.6] writes the score of the
marginal likelihood as a smoothed additive functional,

    grad_theta log p_theta(y_{0:T-1}) = E[ grad log chi(x_0) + grad log g(x_0, y_0)
        + sum_t grad log q(x_t, x_{t+1}) + grad log g(x_{t+1}, y_{t+1}) | y ],

so PPG (or PaRIS) estimates it; a stochastic-approximation ascent follows the estimates, with
PPG's reference path carried from one parameter value to the next [Cardoso2023,
Sec. 4]. Markov score climbing [Naesseth2020] fits a variational Markov law
q_lambda(x_0) prod_t q_lambda(x_{t+1} | x_t) by following E[grad_lambda log q_lambda(x_{0:T-1}) | y],
again an additive functional, which decreases KL(p(. | y) || q_lambda).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..base import PyTree
from ..validation import NonFiniteError, check_choice, check_int, check_key, check_on_nonfinite
from .models import check_inputs
from .filtering import _resolve_backward, _sweep, conditional_sweep, initial_path

METHODS = ("mle", "score_climbing")
ESTIMATORS = ("ppg", "paris")


class VariationalMarkov(NamedTuple):
    """A variational law on paths: ``initial_logpdf(lam, x_0)`` and
    ``transition_logpdf(lam, t, x_t, x_{t+1})`` (log q_lambda(x_{t+1} | x_t) at step t)."""

    initial_logpdf: Callable
    transition_logpdf: Callable


class FitResult(NamedTuple):
    """Final parameters, their values after every iteration, the gradient estimates, and the
    first iteration whose gradient estimate was not finite (-1: none)."""

    params: PyTree
    params_history: PyTree
    gradient_history: PyTree
    nonfinite_step: int = -1


def fisher_score_fns(model_family: Callable, params: PyTree, ys):
    """(initial_fn, additive_fn) whose smoothed sum is the score at ``params`` (Fisher)."""

    def initial(x0):
        def log_joint(p):
            m = model_family(p)
            return m.init_logpdf(x0) + m.observation_logpdf(x0, ys[0])
        return jax.grad(log_joint)(params)

    def additive(t, x, x_next):
        def log_joint(p):
            m = model_family(p)
            return m.transition_logpdf(x, x_next) + m.observation_logpdf(x_next, ys[t + 1])
        return jax.grad(log_joint)(params)

    return initial, additive


def _score_climbing_fns(model_family, variational, params, ys):
    """Fisher score for the model parameters and E[grad log q_lambda] for lambda, jointly."""
    theta, lam = params
    init_theta, add_theta = fisher_score_fns(model_family, theta, ys)

    def initial(x0):
        return init_theta(x0), jax.grad(variational.initial_logpdf)(lam, x0)

    def additive(t, x, x_next):
        return (add_theta(t, x, x_next),
                jax.grad(variational.transition_logpdf)(lam, t, x, x_next))

    return initial, additive


def fit(key, model_family: Callable, ys, params0: PyTree, *, method: str = "mle",
        estimator: str = "ppg", optimizer: Optional[optax.GradientTransformation] = None,
        num_iterations: int = 500, num_particles: int = 32, num_backward: int = 2,
        variational: Optional[VariationalMarkov] = None, backward: str = "auto",
        on_nonfinite: str = "raise") -> FitResult:
    """Learn parameters of a state-space model from ``ys`` by stochastic gradient ascent.

    Args:
      key: a ``jax.random.key``.
      model_family: ``model_family(theta) -> model``, differentiable in ``theta`` (for
        example ``lambda p: LinearGaussian(p["a"], jnp.exp(p["log_q"]), 1.0, 1.0, 0.0, 1.0)``).
      ys: observations, leading axis = time.
      params0: initial ``theta`` for ``method="mle"``; the pair ``(theta, lambda)`` for
        ``method="score_climbing"`` (model and variational parameters, learned jointly; use
        ``()`` for theta to keep the model fixed).
      method: "mle" (ascent on the Fisher-identity score) or "score_climbing" (also ascends
        E[grad log q_lambda | y] with ``variational`` a :class:`VariationalMarkov`).
      estimator: "ppg" (one conditional PaRIS sweep per iteration, reference path carried
        across iterations) or "paris" (an independent PaRIS run per iteration; its O(T/N)
        bias does not average out).
      optimizer: any optax transformation (it is fed minus the gradient estimate);
        default Adam with step 0.05 (1 - k / num_iterations)^0.6, annealed to 0 at the last
        iteration (pass e.g. ``optax.adam(lambda k: 0.05 * (k + 1) ** -0.6)`` for a
        Robbins-Monro schedule).
      num_iterations, num_particles, num_backward: loop length, N and Ñ.
      on_nonfinite: "raise" (default: a :class:`samplers.NonFiniteError` naming the first
        iteration whose gradient estimate is not finite, the history up to it attached as
        ``err.result``) or "flag" (return the whole history, with that iteration in
        ``nonfinite_step``), the policy of ``samplers.run``.

    Returns:
      :class:`FitResult`.
    """
    check_key("key", key, "fit(key, model_family, ys, params0)")
    check_choice("method", method, METHODS)
    check_choice("estimator", estimator, ESTIMATORS)
    check_on_nonfinite(on_nonfinite)
    if method == "score_climbing":
        if not isinstance(variational, VariationalMarkov):
            raise ValueError("method='score_climbing' needs variational=VariationalMarkov(...), "
                             f"got {variational!r}")
        if not (isinstance(params0, tuple) and len(params0) == 2):
            raise ValueError("method='score_climbing' needs params0 = (theta, lambda), got "
                             f"{type(params0).__name__}")
    num_iterations = check_int("num_iterations", num_iterations)
    model0 = model_family(params0[0] if method == "score_climbing" else params0)
    ys = check_inputs(model0, ys, num_particles)
    check_int("num_backward", num_backward)
    mode = _resolve_backward(model0, backward)
    if optimizer is None:
        optimizer = optax.adam(optax.polynomial_schedule(0.05, 0.0, 0.6, num_iterations + 1))
    k_path, k_loop = jax.random.split(key)
    reference = initial_path(k_path, model0, ys, num_particles)
    history = _fit_loop(model_family, ys, params0, k_loop, reference, optimizer=optimizer,
                        method=method, estimator=estimator, num_iterations=num_iterations,
                        num_particles=num_particles, num_backward=num_backward,
                        variational=variational, backward=mode)
    params_hist, grads = history
    finite = np.array([np.all(np.isfinite(np.asarray(leaf)).reshape(num_iterations, -1), axis=1)
                       for leaf in jax.tree.leaves(grads)]).all(axis=0)
    final = jax.tree.map(lambda a: a[-1], params_hist)
    if finite.all():
        return FitResult(final, params_hist, grads)
    bad = int(np.flatnonzero(~finite)[0])
    if on_nonfinite == "flag":
        return FitResult(final, params_hist, grads, bad)
    keep = jax.tree.map(lambda a: a[:bad], history)
    last = jax.tree.map(lambda a: a[bad - 1], params_hist) if bad else params0
    raise NonFiniteError(f"the gradient estimate at iteration {bad} is not finite; the "
                         "parameters before it are in err.result (or pass on_nonfinite='flag')",
                         FitResult(last, *keep, bad))


@functools.partial(jax.jit, static_argnames=("model_family", "optimizer", "method", "estimator", "num_iterations",
                          "num_particles", "num_backward", "variational", "backward"))
def _fit_loop(model_family, ys, params0, key, reference, *, optimizer, method, estimator,
              num_iterations, num_particles, num_backward, variational, backward):
    opt_state = optimizer.init(params0)

    def iteration(carry, k):
        params, opt_state, reference = carry
        if method == "mle":
            model = model_family(params)
            initial, additive = fisher_score_fns(model_family, params, ys)
        else:
            model = model_family(params[0])
            initial, additive = _score_climbing_fns(model_family, variational, params, ys)
        if estimator == "ppg":
            grad, reference, _ = conditional_sweep(
                k, model, ys, reference, additive, num_particles=num_particles,
                num_backward=num_backward, initial_fn=initial, backward=backward)
        else:
            steps, _ = _sweep(model, ys, k, None, additive_fn=additive, initial_fn=initial,
                              num_particles=num_particles, num_backward=num_backward,
                              backward=backward, resampling="systematic", keep_history=False)
            grad = jax.tree.map(lambda a: a[-1], steps.estimate)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grad), opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, reference), (params, grad)

    _, history = jax.lax.scan(iteration, (params0, opt_state, reference),
                              jax.random.split(key, num_iterations))
    return history

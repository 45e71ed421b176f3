"""Bootstrap particle filter, PaRIS smoothing and PaRIS particle Gibbs (PPG).

One compiled sweep does all three: a ``lax.scan`` over time with particles vectorised.

* Bootstrap filter [Gordon1993]: resample, propagate with the transition,
  weight by the observation density; log L-hat = sum_t log mean_i w_t^i, unbiased for L.
* PaRIS [Olsson2017, Alg. 2]: particle i carries
  tau_t^i ~ E[h_t(x_{0:t}) | x_t = xi_t^i]; at each step, Ñ indices J are drawn from the
  backward kernel Lambda_t(i, j) ∝ w_t^j q(xi_t^j, xi_{t+1}^i) and
  tau_{t+1}^i = (1/Ñ) sum_k [tau_t^{J_k} + h~_t(xi_t^{J_k}, xi_{t+1}^i)];
  the smoothed estimate is sum_i W_t^i tau_t^i. O(N Ñ) per step with accept-reject draws.
* PPG [Cardoso2023, Alg. 1]: the same sweep as a conditional SMC with a frozen reference
  path in the last slot (multinomial resampling, as conditional SMC needs); it returns the
  PaRIS estimate and a new
  reference path drawn backwards through the stored PaRIS indices (each an exact draw from
  Lambda_t). Averaging the estimates after a burn-in gives a far smaller bias than PaRIS.

Backward draws: exact (an inverse-CDF categorical over the N weights, O(N^2) per step), or
accept-reject against ``model.log_transition_bound`` (propose j ~ W_t, accept with probability
q / q_bar) for a few vectorised rounds, then exact draws for the few still rejected (the
hybrid of [Dau2023]), so the heavy tail of rejection costs stay bounded.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..base import Algorithm, Array, PyTree
from ..validation import (NonFiniteError, check_choice, check_int, check_key, check_on_nonfinite,
                          check_one_array, check_traced)
from .models import check_inputs

RESAMPLING = ("multinomial", "stratified", "systematic")
BACKWARD = ("auto", "exact", "rejection")
_REJECTION_ROUNDS = 32  # most accept-reject rounds before the exact fallback
_UNROLLED_ROUNDS = 2  # of which the first are unrolled, over all draws
_EXACT_BLOCK_ENTRIES = 2 ** 20  # rows x particles of one block of exact backward logits


class WeightError(NonFiniteError):
    """The particle weights at some time step are NaN, +inf, or all zero: the non-finite
    failure of a particle filter, under ``on_nonfinite="raise"``."""


# ------------------------------------------------------------------------- resampling

def _inverse_cdf(cdf: Array, u: Array) -> Array:
    """Indices i with cdf[i-1] <= u * cdf[-1] < cdf[i] (``cdf`` unnormalised, increasing)."""
    idx = jnp.searchsorted(cdf, u * cdf[-1], side="right")
    return jnp.minimum(idx, cdf.shape[0] - 1)


def _unnormalised_cdf(log_weights: Array) -> Array:
    return jnp.cumsum(jnp.exp(log_weights - jnp.max(log_weights)))


def _unnormalised_cdf_rows(logits: Array) -> Array:
    """Row-wise CDFs by an associative scan: for many rows it runs 4x faster than XLA's CPU
    cumsum (N = 1,000), which wins on compile time for a single vector."""
    w = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    return jax.lax.associative_scan(jnp.add, w, axis=-1)


def resample(key: Array, log_weights: Array, num: int, scheme: str = "systematic") -> Array:
    """``num`` ancestor indices drawn from the normalised weights ``exp(log_weights)``.

    ``multinomial`` (i.i.d.), ``stratified`` (one uniform per stratum [i/num, (i+1)/num)) or
    ``systematic`` (one uniform shared by all strata; [Douc2005]). All three
    are unbiased: the expected number of copies of particle i is ``num * W^i``.
    """
    if scheme == "multinomial":
        u = jax.random.uniform(key, (num,))
    elif scheme == "stratified":
        u = (jnp.arange(num) + jax.random.uniform(key, (num,))) / num
    elif scheme == "systematic":
        u = (jnp.arange(num) + jax.random.uniform(key, ())) / num
    else:
        check_choice("resampling", scheme, RESAMPLING)
    return _inverse_cdf(_unnormalised_cdf(log_weights), u)


# --------------------------------------------------------------------- backward kernel

def _backward_logits(model, x_prev, log_w_prev, x_next):
    """log of w_t^j q(xi_t^j, x_next) for all j (one row of the backward kernel)."""
    return log_w_prev + jax.vmap(model.transition_logpdf, (0, None))(x_prev, x_next)


def backward_exact(key, model, x_prev, log_w_prev, x_next, num):
    """``num`` exact draws from Lambda_t(i, .) for every row ``x_next[i]``: shape (rows, num).

    O(rows x N) work, in blocks of about 2^20 kernel entries so memory stays bounded.
    """
    rows, n = x_next.shape[0], x_prev.shape[0]

    def row(args):
        u, x = args
        cdf = _unnormalised_cdf_rows(_backward_logits(model, x_prev, log_w_prev, x))
        return _inverse_cdf(cdf, u)

    uniforms = jax.random.uniform(key, (rows, num))
    batch = max(1, min(rows, _EXACT_BLOCK_ENTRIES // n))
    return jax.lax.map(row, (uniforms, x_next), batch_size=batch)


class _Rejection(NamedTuple):
    indices: Array
    pending: Array
    proposals: Array
    rounds: Array
    excess: Array  # largest log q - log bound seen (> 0: the bound is wrong)
    key: Array


def backward_rejection(key, model, x_prev, log_w_prev, x_next, num, log_bound):
    """Accept-reject draws from the backward kernel, exact in law.

    Each round proposes j ~ W_t for every pending draw and accepts with probability
    q(xi_t^j, x_next) / exp(log_bound). A few rounds run on all draws; the still-pending ones
    are then gathered into a buffer an eighth the size, where rounds go on until few remain
    or ``_REJECTION_ROUNDS`` is reached, and those few are drawn exactly. Every stopping
    rule looks only at acceptance indicators, so each accepted index keeps the law Lambda_t.
    Returns the indices (rows, num), the number of proposals, and the largest
    log q - log_bound met. No ``lax.cond``: replicates under vmap do not pay for two branches.
    """
    rows = x_next.shape[0]
    slots = rows * num
    cdf = _unnormalised_cdf(log_w_prev)
    row_of = jnp.repeat(jnp.arange(rows), num)
    buffer = max(16, slots // 8)
    block = max(8, slots // 64)  # rows of one exact block

    def round_(s, targets, u):
        """One proposal for every slot (uniforms ``u``: (2, slots)); pending slots may accept."""
        j = _inverse_cdf(cdf, u[0])
        log_q = jax.vmap(model.transition_logpdf)(x_prev[j], targets)
        accept = s.pending & (jnp.log(u[1]) < log_q - log_bound)
        excess = jnp.max(jnp.where(s.pending, log_q - log_bound, -jnp.inf))
        return s._replace(indices=jnp.where(accept, j, s.indices).astype(jnp.int32),
                          pending=s.pending & ~accept,
                          proposals=s.proposals + jnp.sum(s.pending, dtype=jnp.int32),
                          rounds=s.rounds + 1, excess=jnp.maximum(s.excess, excess))

    def looped_round(targets):
        def body(s):
            key, k = jax.random.split(s.key)
            return round_(s._replace(key=key), targets, jax.random.uniform(k, (2, s.pending.size)))
        return body

    def exact_block(targets):
        def body(s):
            key, k = jax.random.split(s.key)
            size = s.pending.size
            which = jnp.nonzero(s.pending, size=min(block, size), fill_value=size)[0]
            draws = backward_exact(k, model, x_prev, log_w_prev,
                                   targets[jnp.minimum(which, size - 1)], 1)[:, 0]
            return s._replace(indices=s.indices.at[which].set(draws.astype(jnp.int32), mode="drop"),
                              pending=s.pending.at[which].set(False, mode="drop"), key=key)
        return body

    def finish(s, targets, rounds_until, exact_until):
        """Rounds while more than ``rounds_until`` are pending (at most _REJECTION_ROUNDS in
        all), then exact blocks while more than ``exact_until`` are."""
        s = jax.lax.while_loop(
            lambda s: (jnp.sum(s.pending) > rounds_until) & (s.rounds < _REJECTION_ROUNDS),
            looped_round(targets), s)
        return jax.lax.while_loop(lambda s: jnp.sum(s.pending) > exact_until,
                                  exact_block(targets), s)

    key, k_unrolled = jax.random.split(key)
    targets = x_next[row_of]
    s = _Rejection(jnp.zeros(slots, jnp.int32), jnp.ones(slots, bool), jnp.zeros((), jnp.int32),
                   jnp.zeros((), jnp.int32), jnp.full((), -jnp.inf, log_w_prev.dtype), key)
    # straight-line first rounds, their uniforms drawn in one call (on CPU, loop iterations and
    # small random draws cost more than a round's arithmetic)
    uniforms = jax.random.uniform(k_unrolled, (_UNROLLED_ROUNDS, 2, slots))
    for r in range(_UNROLLED_ROUNDS):
        s = round_(s, targets, uniforms[r])
    s = finish(s, targets, buffer, buffer)  # usually does nothing: few are left after the first rounds
    # the rest, gathered into the buffer
    which = jnp.nonzero(s.pending, size=buffer, fill_value=slots)[0]
    b = finish(s._replace(indices=jnp.zeros(buffer, jnp.int32), pending=which < slots),
               targets[jnp.minimum(which, slots - 1)], block, 0)
    indices = s.indices.at[which].set(b.indices, mode="drop")
    return indices.reshape(rows, num), b.proposals, b.excess


# ----------------------------------------------------------------------------- sweep

class _Step(NamedTuple):
    estimate: PyTree
    log_increment: Array
    mean: Array
    ess: Array
    bad: Array
    proposals: Array
    excess: Array


def _weights_bad(log_w):
    return jnp.any(jnp.isnan(log_w) | (log_w == jnp.inf)) | jnp.all(log_w == -jnp.inf)


def _summaries(x, log_w, tau, proposals, excess):
    n = log_w.shape[0]
    lse = jax.scipy.special.logsumexp(log_w)
    W = jnp.exp(log_w - lse)
    estimate = jax.tree.map(lambda leaf: jnp.tensordot(W, leaf, axes=1), tau)
    return _Step(estimate, lse - math.log(n), W @ x, 1.0 / jnp.sum(W ** 2), _weights_bad(log_w),
                 proposals, excess)


def _zeros_like_statistic(additive_fn, x0, n):
    shapes = jax.eval_shape(additive_fn, 0, x0[0], x0[0])
    return jax.tree.map(lambda s: jnp.zeros((n,) + s.shape, s.dtype), shapes)


_STATIC = ("additive_fn", "initial_fn", "num_particles", "num_backward", "backward",
           "resampling", "keep_history")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _sweep(model, ys, key, reference, *, additive_fn, initial_fn, num_particles, num_backward,
           backward, resampling, keep_history):
    """One forward pass: bootstrap filter (``additive_fn`` None), PaRIS, or, with a
    ``reference`` path, conditional PaRIS. Returns per-step summaries, the final cloud and,
    with ``keep_history``, the particles and one backward index per particle and step."""
    n = num_particles
    k0, key = jax.random.split(key)
    k_init, k_path = jax.random.split(k0)
    x0 = jax.vmap(model.init_sample)(jax.random.split(k_init, n))
    if reference is not None:
        x0 = x0.at[-1].set(reference[0])
        resampling = "multinomial"  # conditional SMC: the free slots draw i.i.d. ancestors
    log_w0 = jax.vmap(model.observation_logpdf, (0, None))(x0, ys[0])
    smoothing = additive_fn is not None
    tau0 = None
    if smoothing:
        tau0 = (jax.vmap(initial_fn)(x0) if initial_fn is not None
                else _zeros_like_statistic(additive_fn, x0, n))
    no_proposals, no_excess = jnp.zeros((), jnp.int32), jnp.full((), -jnp.inf, log_w0.dtype)
    first = _summaries(x0, log_w0, tau0, no_proposals, no_excess)

    def step(carry, inp):
        x, log_w, tau = carry
        t, y, k, x_ref = inp
        k_res, k_move, k_back = jax.random.split(k, 3)
        ancestors = resample(k_res, log_w, n, resampling)
        x_next = jax.vmap(model.transition_sample)(jax.random.split(k_move, n), x[ancestors])
        if x_ref is not None:
            x_next = x_next.at[-1].set(x_ref)
        log_w_next = jax.vmap(model.observation_logpdf, (0, None))(x_next, y)
        proposals, excess, first_index = no_proposals, no_excess, ancestors
        tau_next = None
        if smoothing:
            if backward == "exact":
                J = backward_exact(k_back, model, x, log_w, x_next, num_backward)
            else:
                J, proposals, excess = backward_rejection(
                    k_back, model, x, log_w, x_next, num_backward, model.log_transition_bound)
            h = jax.vmap(jax.vmap(additive_fn, (None, 0, None)), (None, 0, 0))(t, x[J], x_next)
            tau_next = jax.tree.map(lambda a, b: jnp.mean(a[J] + b, axis=1), tau, h)
            first_index = J[:, 0]
        out = _summaries(x_next, log_w_next, tau_next, proposals, excess)
        history = (x_next, first_index) if keep_history else None
        return (x_next, log_w_next, tau_next), (out, history)

    T = ys.shape[0]
    refs = None if reference is None else reference[1:]
    (x_T, log_w_T, _), (steps, history) = jax.lax.scan(
        step, (x0, log_w0, tau0),
        (jnp.arange(T - 1), ys[1:], jax.random.split(key, T - 1), refs))
    steps = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, steps)
    path = None
    if keep_history:
        xs = jnp.concatenate([x0[None], history[0]])
        path = _trace_back(k_path, xs, history[1], log_w_T)
    return steps, path


@functools.partial(jax.jit, static_argnames=_STATIC)
def _sweeps(model, ys, keys, reference, **static):
    """Independent sweeps, one per key in ``keys`` (leading axis), in one compiled call."""
    return jax.vmap(lambda k: _sweep(model, ys, k, reference, **static))(keys)


def _run_sweeps(model, ys, key, **static):
    """One sweep for a single key, replicates (leading axis) for an array of keys."""
    key = jnp.asarray(key)
    if key.ndim > 1 or not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        raise TypeError(f"key must be a jax.random.key or a 1-d array of them, got dtype "
                        f"{key.dtype} and shape {key.shape}")
    return (_sweeps if key.ndim == 1 else _sweep)(model, ys, key, None, **static)


def _trace_back(key, xs, indices, log_w_last):
    """A path through the stored cloud: b_{T-1} ~ W_{T-1}, then b_t = J_t[b_{t+1}] with J_t the
    first PaRIS (or ancestor) index of each particle: an exact backward draw when J_t is."""
    b_last = _inverse_cdf(_unnormalised_cdf(log_w_last), jax.random.uniform(key, ()))

    def body(b, J):
        b_prev = J[b]
        return b_prev, b_prev

    _, bs = jax.lax.scan(body, b_last, indices, reverse=True)
    bs = jnp.concatenate([bs, b_last[None]])
    return xs[jnp.arange(xs.shape[0]), bs]


# ---------------------------------------------------------------------- validation

def _resolve_backward(model, backward):
    check_choice("backward", backward, BACKWARD)
    bound = getattr(model, "log_transition_bound", None)
    if backward == "rejection" and bound is None:
        raise ValueError("backward='rejection' needs model.log_transition_bound (sup log q); "
                         "this model has none: use backward='exact'")
    if backward == "auto":
        return "exact" if bound is None else "rejection"
    return backward


def _raise_weight_error(nonfinite_step):
    """Raise :class:`WeightError` naming the first time step (and replicate) whose weights
    failed, given the (replicates,) or scalar first failing steps (-1: none)."""
    first = np.atleast_1d(np.asarray(nonfinite_step))
    failed = np.flatnonzero(first >= 0)
    if failed.size:
        r = int(failed[0])
        where = f" (replicate {r})" if np.ndim(nonfinite_step) else ""
        raise WeightError(f"the log-weights at time step {int(first[r])}{where} are NaN, +inf or "
                          "all -inf (no particle explains that observation); check the model's "
                          "observation_logpdf and the observation at that step, or pass "
                          "on_nonfinite='flag' to get the result with result.nonfinite_step")


def _raise_on_loose_bound(excess, log_transition_bound):
    excess = float(np.max(np.asarray(excess)))
    if excess > 0 and excess > 1e-4 * (1.0 + abs(float(log_transition_bound))):
        raise ValueError(f"model.log_transition_bound = {float(log_transition_bound)} is "
                         f"not an upper bound: log q(x, x') reached it + {excess:.3g}; "
                         "fix the bound or use backward='exact'")


def _check_sweep(steps: _Step, model, on_nonfinite: str = "raise") -> Array:
    """Checks of a sweep's summaries, on the host (through a callback when traced):
    degenerate weights (raised under ``on_nonfinite="raise"``), a wrong transition bound.
    Returns the first time step whose weights failed, -1 if none (per replicate)."""
    nonfinite_step = jnp.where(jnp.any(steps.bad, axis=-1), jnp.argmax(steps.bad, axis=-1),
                               -1).astype(jnp.int32)
    if on_nonfinite == "raise":
        check_traced(_raise_weight_error, nonfinite_step)
    bound = getattr(model, "log_transition_bound", None)
    if bound is not None:
        check_traced(_raise_on_loose_bound, steps.excess, bound)
    return nonfinite_step


# ------------------------------------------------------------------------ public API

class FilterResult(NamedTuple):
    """Bootstrap filter output: log L-hat (unbiased in L, so E log L-hat < log L by about
    Var(log L-hat) / 2), its per-step terms, filtering means and effective sample sizes, and
    the first time step whose weights were NaN, +inf or all zero (-1: none; with
    ``on_nonfinite="flag"``, the outputs from that step on are not to be trusted)."""

    log_likelihood: Array
    log_likelihood_increments: Array
    filtering_means: Array
    ess: Array
    nonfinite_step: Array


def particle_filter(key, model, ys, num_particles: int, resampling: str = "systematic", *,
                    on_nonfinite: str = "raise") -> FilterResult:
    """Run the bootstrap particle filter on ``ys`` (rows y_0..y_{T-1}).

    Args:
      key: a ``jax.random.key``, or a 1-d array of keys for independent replicates (every
        output then has a leading replicate axis; one compiled call).
      model: a state-space model (:class:`samplers.smc.StateSpaceModel`, ...).
      ys: observations, leading axis = time.
      num_particles: N >= 2.
      resampling: "systematic" (default), "stratified" or "multinomial", at every step.
      on_nonfinite: "raise" (default: a :class:`WeightError`, a
        :class:`samplers.NonFiniteError`, naming the first time step whose weights are NaN,
        +inf or all zero) or "flag" (return the result, with that step in
        ``nonfinite_step``), the policy of ``samplers.run``. Under ``jit`` "raise" stops the
        program (one host callback per call); in a jitted loop where a degenerate sweep is
        an expected outcome (a PMMH proposal to reject), use "flag".
    """
    check_key("key", key, "particle_filter(key, model, ys, num_particles)", batched=True)
    ys = check_inputs(model, ys, num_particles)
    check_choice("resampling", resampling, RESAMPLING)
    check_on_nonfinite(on_nonfinite)
    steps, _ = _run_sweeps(model, ys, key, additive_fn=None, initial_fn=None,
                           num_particles=num_particles, num_backward=1, backward="exact",
                           resampling=resampling, keep_history=False)
    nonfinite_step = _check_sweep(steps, model, on_nonfinite)
    return FilterResult(jnp.sum(steps.log_increment, axis=-1), steps.log_increment, steps.mean,
                        steps.ess, nonfinite_step)


class ParisResult(NamedTuple):
    """PaRIS output: the smoothed additive functional E[h(x_{0:T-1}) | y_{0:T-1}], its online
    values E[h_t | y_{0:t}] at every t, the filter's outputs, and the mean number of
    accept-reject proposals per backward draw (0 with exact draws), and the first time step
    whose weights failed (-1: none), as in :class:`FilterResult`."""

    estimate: PyTree
    online_estimates: PyTree
    log_likelihood: Array
    filtering_means: Array
    proposals_per_draw: Array
    nonfinite_step: Array


def paris(key, model, ys, additive_fn: Callable, num_particles: int, num_backward: int = 2, *,
          initial_fn: Optional[Callable] = None, backward: str = "auto",
          resampling: str = "systematic", on_nonfinite: str = "raise") -> ParisResult:
    """PaRIS estimate of E[sum_t h~_t(x_t, x_{t+1}) | y] ([Olsson2017, Alg. 2]).

    Args:
      key, model, ys, num_particles, resampling, on_nonfinite: as in :func:`particle_filter`
        (an array of keys gives replicates).
      additive_fn: ``additive_fn(t, x_t, x_{t+1}) -> pytree`` of arrays, the term h~_t for
        t = 0..T-2; jit-traceable. Build it once (it is a compile-cache key).
      num_backward: Ñ backward draws per particle and step (2 is the paper's advice; 1
        degenerates over long horizons).
      initial_fn: optional ``initial_fn(x_0) -> pytree``, a term in x_0 (same structure).
      backward: "rejection" (needs ``model.log_transition_bound``), "exact", or "auto"
        (rejection when the model has a bound).

    The estimate is biased at finite N (self-normalised importance weights), by O(T / N).
    """
    check_key("key", key, "paris(key, model, ys, additive_fn, num_particles)", batched=True)
    ys = check_inputs(model, ys, num_particles)
    check_int("num_backward", num_backward)
    check_choice("resampling", resampling, RESAMPLING)
    check_on_nonfinite(on_nonfinite)
    steps, _ = _run_sweeps(model, ys, key, additive_fn=additive_fn, initial_fn=initial_fn,
                           num_particles=num_particles, num_backward=num_backward,
                           backward=_resolve_backward(model, backward), resampling=resampling,
                           keep_history=False)
    nonfinite_step = _check_sweep(steps, model, on_nonfinite)
    time_axis = jnp.ndim(key)  # 1 for replicates
    final = jax.tree.map(lambda a: jnp.take(a, -1, axis=time_axis), steps.estimate)
    draws = num_particles * num_backward * (ys.shape[0] - 1)
    return ParisResult(final, steps.estimate, jnp.sum(steps.log_increment, axis=-1), steps.mean,
                       jnp.sum(steps.proposals, axis=-1) / max(draws, 1), nonfinite_step)


def initial_path(key, model, ys, num_particles: int = 100) -> Array:
    """A path x_{0:T-1} for the first PPG sweep: a bootstrap filter and one backward draw
    through its genealogy (any path is valid; a likely one shortens the burn-in). Raises
    :class:`WeightError` when the filter's weights fail (there is no path to return)."""
    check_key("key", key, "initial_path(key, model, ys)", batched=False)
    ys = check_inputs(model, ys, num_particles)
    steps, path = _sweep(model, ys, key, None, additive_fn=None, initial_fn=None,
                         num_particles=num_particles, num_backward=1, backward="exact",
                         resampling="systematic", keep_history=True)
    _check_sweep(steps, model)
    return path


class PPGState(NamedTuple):
    """PPG's Markov state: the reference path, the roll-out average of the sweep estimates
    after the burn-in (zeros before), and the number of sweeps done."""

    position: Array
    estimate: PyTree
    iteration: Array


class PPGInfo(NamedTuple):
    """One sweep's PaRIS estimate Pi_k(h) and accept-reject proposals per backward draw."""

    sweep_estimate: PyTree
    proposals_per_draw: Array


def conditional_sweep(key, model, ys, reference, additive_fn, *, num_particles, num_backward=2,
                      initial_fn=None, backward="exact"):
    """One PPG iteration: conditional PaRIS given ``reference``; returns the sweep estimate
    Pi(h), the new reference path, and the per-step summaries. Traceable (no checks)."""
    steps, path = _sweep(model, ys, key, reference, additive_fn=additive_fn,
                         initial_fn=initial_fn, num_particles=num_particles,
                         num_backward=num_backward, backward=backward,
                         resampling="multinomial", keep_history=True)
    return jax.tree.map(lambda a: a[-1], steps.estimate), path, steps


def ppg(model, ys, additive_fn: Callable, num_particles: int, num_backward: int = 2,
        burn_in: int = 0, *, initial_fn: Optional[Callable] = None,
        backward: str = "auto") -> Algorithm:
    """PaRIS particle Gibbs [Cardoso2023, Alg. 1] as an algorithm for :func:`samplers.run`.

    The position is the reference path (T, d): start from :func:`initial_path` (or any path).
    Each step is one conditional PaRIS sweep; ``info.sweep_estimate`` is Pi_k(h) and
    ``state.estimate`` the roll-out average over sweeps ``burn_in + 1..k``, whose bias decays
    geometrically in ``burn_in`` (exactly unbiased when the reference is an exact smoothing
    draw). Memory O(N T): the sweep stores the cloud to draw the next reference.

    Args: as :func:`paris`; ``burn_in`` (k0) sweeps are left out of the average.
    """
    ys = check_inputs(model, ys, num_particles)
    check_int("num_backward", num_backward)
    check_int("burn_in", burn_in, minimum=0)
    mode = _resolve_backward(model, backward)
    T = ys.shape[0]

    def init(position, key=None):
        del key
        check_one_array("the initial reference path", position, f"(T={T}, d)")
        position = jnp.asarray(position)
        if position.ndim != 2 or position.shape[0] != T:
            raise ValueError(f"the initial reference path must have shape (T={T}, d), "
                             f"got {position.shape}")
        x = jnp.zeros_like(position[0])
        shapes = jax.eval_shape(additive_fn, 0, x, x)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return PPGState(position, zeros, jnp.zeros((), jnp.int32))

    def step(key, state, batch=None):
        del batch
        estimate, path, steps = conditional_sweep(
            key, model, ys, state.position, additive_fn, num_particles=num_particles,
            num_backward=num_backward, initial_fn=initial_fn, backward=mode)
        k = state.iteration + 1
        weight = jnp.where(k > burn_in, 1.0 / jnp.maximum(k - burn_in, 1), 0.0)
        average = jax.tree.map(lambda m, e: m + weight * (e - m), state.estimate, estimate)
        draws = num_particles * num_backward * max(T - 1, 1)
        return (PPGState(path, average, k),
                PPGInfo(estimate, jnp.sum(steps.proposals) / draws))

    return Algorithm(init=init, step=step, name="ppg")

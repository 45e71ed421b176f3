"""The driver: ``samplers.run`` runs any :class:`~samplers.base.Algorithm` for many steps.

A run without checkpoints is one compiled program: per-chain keys, initial states, warm-up
and sampling, so a call costs one dispatch and one scalar transfer back (whether the host
must look: a bad start, a non-finite chain). Chains are vectorised with ``vmap`` inside
each step. What the loop does per step is what the sampler needs: the statistics of a draw
travel packed in one array, the non-finite guard of the kept draws is computed from their
records after the loop, the step size is not recorded per step, and the progress bar is
one host callback per chunk of 1/20 of the run, at least 100 steps (none when it is off).

The key of step t of chain c is ``fold_in(key_c, t)``: draws do not depend on how the run is
cut into compiled chunks, which makes a checkpointed and resumed run bit-identical to an
uninterrupted one.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import sys
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jax.flatten_util import ravel_pytree

from . import adaptation
from .base import Algorithm, PyTree, tree_all_finite
from .checkpoint import load as _load_checkpoint, save as _save_checkpoint
from .data import Minibatches
from .trace import Trace
from .validation import (NonFiniteError, check_bool, check_choice, check_finite_position,
                         check_int, check_key, check_mesh, check_on_nonfinite)

__all__ = ["run"]


# ----------------------------------------------------------------------- progress bar

_BARS: dict[int, Any] = {}
_RUN_IDS = itertools.count()
# With the bar on: at most 20 host callbacks per run, at least 100 steps apart (each costs
# 0.15-0.4 ms on 2 CPU cores, so a short run pays for few of them)
PROGRESS_UPDATES, PROGRESS_MIN_CHUNK = 20, 100


def _progress_chunk(total: int) -> int:
    """Steps between two updates of the progress bar."""
    return max(total // PROGRESS_UPDATES, min(total, PROGRESS_MIN_CHUNK))


def _report(run_id, steps_done):
    bar = _BARS.get(int(run_id))
    if bar is not None and int(steps_done) > bar.n:
        bar.update(int(steps_done) - bar.n)


def _scan(body, carry, xs, *, every, run_id, steps_done):
    """``lax.scan(body, carry, xs)``; with ``every`` > 0, as an outer scan over chunks of
    ``every`` steps that reports ``steps_done(last x of the chunk)`` to the progress bar
    once per chunk (one unconditional host callback, no per-step branch)."""
    if not every:
        return jax.lax.scan(body, carry, xs)
    length = jax.tree.leaves(xs)[0].shape[0]
    full = length - length % every
    outputs = []

    def chunk(carry, xs_chunk):
        carry, ys = jax.lax.scan(body, carry, xs_chunk)
        last = jax.tree.map(lambda x: x[-1], xs_chunk)
        jax.debug.callback(_report, run_id, steps_done(last))
        return carry, ys

    if full:
        chunks = jax.tree.map(lambda x: x[:full].reshape((full // every, every) + x.shape[1:]), xs)
        carry, ys = jax.lax.scan(chunk, carry, chunks)
        outputs.append(jax.tree.map(lambda y: y.reshape((full,) + y.shape[2:]), ys))
    if length > full:
        carry, ys = chunk(carry, jax.tree.map(lambda x: x[full:], xs))
        outputs.append(ys)
    if len(outputs) == 1:
        return carry, outputs[0]
    return carry, jax.tree.map(lambda *ys: jnp.concatenate(ys), *outputs)


# ------------------------------------------------------------------------ transitions

def _static(algorithm: Algorithm) -> Algorithm:
    """The part of ``algorithm`` that is compiled in: its functions, not its parameters.
    ``init`` and ``kernel`` of algorithms rebuilt from one log-density compare equal
    (:class:`samplers.base.Bound`), so new parameters reuse the compiled program."""
    if algorithm.kernel is not None:
        return algorithm._replace(step=None, params=None)
    return algorithm._replace(params=None)


def _transition(algorithm, states, chain_keys, t, batches, params):
    """Step every chain once, as global step ``t``; ``params`` with a leading chain axis
    (``algorithm.kernel``'s), or None (``algorithm.step``)."""

    def one(state, chain_key, params):
        key = jax.random.fold_in(chain_key, t)
        batch = None
        if batches is not None:
            key, key_batch = jax.random.split(key)
            batch = batches.sample(key_batch)
        if params is None:
            return algorithm.step(key, state, batch)
        return algorithm.kernel(key, state, batch, params)

    return jax.vmap(one)(states, chain_keys, params)


def _finite(states, logdensity=None, axes: int = 1):
    """True where a state is finite, over ``axes`` leading (chain[, draw]) axes: its
    log-density when the sampler keeps one (one scalar per state, so the guard costs O(1)),
    else every entry of its position."""
    if logdensity is not None:
        return jnp.isfinite(logdensity)
    leaves = [jnp.all(jnp.isfinite(x.reshape(x.shape[:axes] + (-1,))), axis=-1)
              for x in jax.tree.leaves(states)]
    return functools.reduce(jnp.logical_and, leaves)


def _mark_nonfinite(first_bad, finite, steps):
    """Record in ``first_bad`` (chain,) the first of ``steps`` (k,) at which each chain was
    not ``finite`` (chain, k), unless an earlier step is recorded already (-1: none yet)."""
    bad = ~finite
    found = jnp.where(jnp.any(bad, axis=1), steps[jnp.argmax(bad, axis=1)], -1)
    earliest = jnp.where((first_bad >= 0) & ((found < 0) | (first_bad < found)), first_bad, found)
    return earliest.astype(first_bad.dtype)


def _step_guard(first_bad, states, t):
    """The non-finite guard after one step ``t``."""
    finite = _finite(states.position, getattr(states, "logdensity", None))
    return _mark_nonfinite(first_bad, finite[:, None], jnp.asarray(t)[None])


def _counts_trajectory(info) -> bool:
    """Whether a step's gradient count varies (a trajectory's length), else it is 1."""
    return hasattr(info, "num_integration_steps")


def _stepped_shape(algorithm, states, chain_keys, batches, params):
    """The chains' states after one transition, as shapes with their shardings, and one
    chain's info, as shapes (traced once, at compile time)."""
    stepped, info = jax.eval_shape(
        lambda s, k, p: _transition(algorithm, s, k, 0, batches, p), states, chain_keys, params)
    return stepped, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), info)


class _Options(NamedTuple):
    """The arguments of :func:`run` that shape the compiled program (static)."""

    num_chains: int
    chain_axis: bool
    num_warmup: int
    adapt_step_size: Optional[bool]
    adapt_mass_matrix: Optional[bool]
    dense_mass: bool
    adaptation: str
    target_acceptance: Optional[float]
    mesh: Optional[jax.sharding.Mesh]
    every: int
    keep_warmup: bool = False


class _Adapt(NamedTuple):
    """What warm-up adapts (static)."""

    step_size: bool
    mass_matrix: bool
    dense_mass: bool
    pooled: bool
    target: float


def _setup(algorithm, key, initial_position, params, options):
    """Per-chain keys, positions, parameters (leading chain axis, on the mesh if any) and
    initial states."""
    num_chains = options.num_chains
    chain_keys = jax.random.split(key, num_chains)
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2**31 - 1))(chain_keys)
    chained = lambda x: jnp.broadcast_to(x, (num_chains,) + jnp.shape(x))  # noqa: E731
    positions = (initial_position if options.chain_axis else
                 jax.tree.map(chained, initial_position))
    params = jax.tree.map(chained, params)
    if options.mesh is not None:
        mesh = options.mesh
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
        chain_keys, init_keys, positions, params = jax.tree.map(
            lambda x: jax.lax.with_sharding_constraint(x, sharding),
            (chain_keys, init_keys, positions, params))
    states = jax.vmap(algorithm.init)(positions, init_keys)
    return chain_keys, params, states


def _stat_layout(info, states, step_size: bool) -> tuple:
    """The per-chain scalar statistics of a draw that travel packed in one array:
    ``((name, dtype), ...)`` for the float and bool fields of the info (shapes of one
    chain), the log-density and, with ``step_size``, the step the draw was made with; any
    other info field (an array, a pytree) is recorded as it is."""
    fields = dict(getattr(info, "_asdict", dict)())
    logdensity = getattr(states, "logdensity", None)
    if logdensity is not None:
        fields["lp"] = jax.ShapeDtypeStruct((), logdensity.dtype)
    if step_size:
        fields["step_size"] = jax.ShapeDtypeStruct((), jnp.result_type(float))
    return tuple((name, x.dtype) for name, x in sorted(fields.items())
                 if getattr(x, "shape", None) == ()
                 and (jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == bool))


def _record(states, info, layout, step_size=None):
    """What the loop keeps of one draw: the positions and the statistics, those named in
    ``layout`` packed in one (chain, k) array (one output per draw, not one per statistic)."""
    stats = dict(getattr(info, "_asdict", dict)())
    if getattr(states, "logdensity", None) is not None:
        stats["lp"] = states.logdensity
    if step_size is not None:
        stats["step_size"] = step_size
    if not layout:
        return states.position, (None, stats)
    dtype = jnp.result_type(jnp.float32, *(dt for _, dt in layout))
    packed = jnp.stack([stats[name].astype(dtype) for name, _ in layout], axis=-1)
    return states.position, (packed, {k: v for k, v in stats.items() if k not in dict(layout)})


def _records(positions, records, layout):
    """The (chain, draw, ...) ``positions`` and the statistics of a loop's (draw, chain, ...)
    ``records``, the packed ones unpacked (the packed dtype holds every value exactly), with
    ``diverging`` marking the draws that are not finite; also returns that finiteness
    (chain, draw)."""
    packed, rest = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), records)
    stats = {name: packed[..., i].astype(dt) for i, (name, dt) in enumerate(layout)}
    stats.update(rest)
    finite = _finite(positions, stats.get("lp"), axes=2)
    stats["diverging"] = stats.get("diverging", False) | ~finite
    return positions, stats, finite


def _warmup(algorithm, states, chain_keys, batches, params, run_id, options):
    """``num_warmup`` steps, adapting ``params`` (:mod:`samplers.adaptation`) as the options
    say; returns the states, the adapted parameters, the non-finite guard, each chain's
    gradient count and, with ``keep_warmup``, the warm-up's (positions, stats), whose
    ``step_size`` is the step each draw was made with."""
    num_chains, num_warmup = options.num_chains, options.num_warmup
    first_bad = jnp.full((num_chains,), -1, jnp.int32)
    grads = jnp.zeros((num_chains,), jnp.int32)
    info = _stepped_shape(algorithm, states, chain_keys, batches, params)[1]
    adapt = _adaptation(algorithm, params, info, options)
    if not num_warmup:
        return states, params, first_bad, grads, None
    has_step = getattr(params, "step_size", None) is not None
    layout = _stat_layout(info, states, has_step) if options.keep_warmup else ()
    tuning = adapt is not None
    if tuning:
        dim = sum(math.prod(x.shape[1:]) for x in jax.tree.leaves(states.position))
        window = jax.vmap(functools.partial(
            adaptation.window_init, dim=dim, adapt_mass_matrix=adapt.mass_matrix,
            dense_mass=adapt.dense_mass))(params)
        slow, end = adaptation.window_schedule(num_warmup)
        update = jax.vmap(functools.partial(
            adaptation.window_update, target=adapt.target, adapt_step_size=adapt.step_size,
            adapt_mass_matrix=adapt.mass_matrix, dense_mass=adapt.dense_mass,
            axis_name="chain" if adapt.pooled else None),
            in_axes=(0, None, None, 0, 0), axis_name="chain")
    else:
        window, slow, end = params, np.zeros(num_warmup, bool), np.zeros(num_warmup, bool)
    counts = _counts_trajectory(info)

    def body(carry, xs):
        states, window, first_bad, grads = carry
        t, slow_t, end_t = xs
        step_params = window.params if tuning else window
        states, info = _transition(algorithm, states, chain_keys, t, batches, step_params)
        record = None
        if options.keep_warmup:
            record = _record(states, info, layout,
                             step_params.step_size if has_step else None)
        if tuning:
            flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
            statistic = adaptation.tuning_statistic(info, flat.shape[1])
            window = update(window, slow_t, end_t, flat, statistic)
        if counts:
            grads = grads + info.num_integration_steps.astype(jnp.int32)
        return (states, window, _step_guard(first_bad, states, t), grads), record

    xs = (jnp.arange(num_warmup), jnp.asarray(slow), jnp.asarray(end))
    (states, window, first_bad, grads), records = _scan(
        body, (states, window, first_bad, grads), xs, every=options.every, run_id=run_id,
        steps_done=lambda x: x[0] + 1)
    if not counts:
        grads = grads + num_warmup
    if tuning:
        params = jax.vmap(functools.partial(adaptation.window_final,
                                            adapt_step_size=adapt.step_size))(window)
    if records is not None:
        positions, stats = records
        records = _records(jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), positions), stats,
                           layout)[:2]
    return states, params, first_bad, grads, records


def _sample(algorithm, states, first_bad, grads, chain_keys, batches, params, first_step, run_id,
            *, num_draws, thin, every):
    """``num_draws * thin`` steps from global step ``first_step``, keeping every ``thin``-th.

    The non-finite guard of the kept steps is computed once from their records after the
    loop; only the thinned-out steps carry it step by step. With several chains the kept
    positions are written into a (chain, draw, ...) buffer carried by the loop rather than
    stacked (draw, chain, ...) and transposed after it (that transpose cost 5-7% of a run at
    d = 1000 with 16 chains); with one chain the transpose is free and the stack is faster
    (by about 4% at d = 10). The buffer is built like a stepped position, so it lives where
    the step puts its positions (on the mesh of an explicitly sharded step, as FA-LD's)."""
    stepped, info_shape = _stepped_shape(algorithm, states, chain_keys, batches, params)
    counts = _counts_trajectory(info_shape)
    layout = _stat_layout(info_shape, states, False)

    def one_step(carry, t):
        states, first_bad, grads = carry
        states, info = _transition(algorithm, states, chain_keys, t, batches, params)
        if counts:
            grads = grads + info.num_integration_steps.astype(jnp.int32)
        return (states, first_bad, grads), info

    def thinned_out(carry, t):
        (states, first_bad, grads), _ = one_step(carry, t)
        return (states, _step_guard(first_bad, states, t), grads), None

    buffered = jax.tree.leaves(states.position)[0].shape[0] > 1

    def draw(carry, i):
        carry, positions = carry
        last = first_step + (i + 1) * thin - 1
        if thin > 1:  # the thinned-out steps, then the kept one (no nested loop when thin = 1)
            carry, _ = jax.lax.scan(thinned_out, carry, last - thin + 1 + jnp.arange(thin - 1))
        carry, info = one_step(carry, last)
        position, record = _record(carry[0], info, layout)
        if not buffered:
            return (carry, positions), (position, record)
        positions = jax.tree.map(lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, i, 1),
                                 positions, position)
        return (carry, positions), (None, record)

    buffer = None if not buffered else jax.tree.map(  # (chain, draw, ...), sharded as a step's
        lambda x: jnp.broadcast_to(jnp.zeros_like(x)[:, None],
                                   (x.shape[0], num_draws) + x.shape[1:]),
        stepped.position)
    ((states, first_bad, grads), positions), (stacked, records) = _scan(
        draw, ((states, first_bad, grads), buffer), jnp.arange(num_draws), every=every,
        run_id=run_id, steps_done=lambda i: first_step + (i + 1) * thin)
    if not buffered:
        positions = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), stacked)
    if not counts:
        grads = grads + num_draws * thin
    positions, stats, finite = _records(positions, records, layout)
    first_bad = _mark_nonfinite(first_bad, finite, first_step + thin - 1 + thin * jnp.arange(num_draws))
    step_size = getattr(params, "step_size", None)
    if step_size is not None and "step_size" not in stats:
        stats["step_size"] = jnp.broadcast_to(jnp.reshape(step_size, (-1, 1)), finite.shape)
    return states, first_bad, grads, (positions, stats)


def _unless_bad_start(ok, fn, *args):
    """``fn(*args)`` when the chains start finite (``ok``), else zeros shaped like its output:
    a run that starts outside the support returns at once, and the host says why."""

    def zeros(*args):
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(fn, *args))

    return jax.lax.cond(ok, fn, zeros, *args)


@functools.partial(jax.jit, static_argnames=("algorithm", "options"))
def _start(algorithm, key, initial_position, params, batches, run_id, *, options):
    """Set-up and warm-up, compiled as one program (the first part of a checkpointed run);
    also returns whether the chains start finite, and their initial log-densities."""
    chain_keys, params, states = _setup(algorithm, key, initial_position, params, options)
    lp0 = getattr(states, "logdensity", None)
    ok = tree_all_finite(initial_position)
    if lp0 is not None:
        ok = ok & jnp.all(jnp.isfinite(lp0))
    warm = _unless_bad_start(
        ok, lambda s, p: _warmup(algorithm, s, chain_keys, batches, p, run_id, options),
        states, params)
    return chain_keys, ok, lp0, warm


_sample_chunk = jax.jit(_sample, static_argnames=("algorithm", "num_draws", "thin", "every"))


@functools.partial(jax.jit, static_argnames=("algorithm", "options", "num_draws", "thin"))
def _whole(algorithm, key, initial_position, params, batches, run_id, *, options, num_draws,
           thin):
    """A run without checkpoints as one compiled program: set-up, warm-up and sampling;
    ``ok`` is False when the run needs a look from the host (a bad start, a non-finite
    chain), so a run that went well costs one scalar transfer."""
    chain_keys, ok, lp0, (states, params, first_bad, grads, warm) = _start(
        algorithm, key, initial_position, params, batches, run_id, options=options)
    states, first_bad, grads, records = _unless_bad_start(
        ok, lambda s, f, g, p: _sample(algorithm, s, f, g, chain_keys, batches, p,
                                       options.num_warmup, run_id, num_draws=num_draws,
                                       thin=thin, every=options.every),
        states, first_bad, grads, params)
    return ok & jnp.all(first_bad < 0), lp0, (states, params, first_bad, grads, warm), records


# ------------------------------------------------------------------------- checkpoints

def _fingerprint(algorithm, key, positions, params, **config) -> str:
    digest = hashlib.sha256(repr((algorithm.name, sorted(config.items()))).encode())
    for leaf in jax.tree.leaves((jax.random.key_data(key), positions, params)):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


# -------------------------------------------------------------------------------- run

def _validate(algorithm, num_steps, num_chains, num_warmup, thin, on_nonfinite,
              checkpoint, checkpoint_every, batches):
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a samplers.Algorithm (e.g. samplers.mala(...)), "
                        f"got {type(algorithm).__name__}")
    for name, value, low in (("num_steps", num_steps, 1), ("num_chains", num_chains, 1),
                             ("num_warmup", num_warmup, 0), ("thin", thin, 1)):
        check_int(name, value, minimum=low)
    if num_steps % thin:
        raise ValueError(f"num_steps must be a multiple of thin={thin}, got {num_steps}")
    check_on_nonfinite(on_nonfinite)
    if checkpoint_every is not None:
        if checkpoint is None:
            raise ValueError("checkpoint_every needs checkpoint=<path>")
        if check_int("checkpoint_every", checkpoint_every, minimum=thin) % thin:
            raise ValueError(f"checkpoint_every must be a positive multiple of thin={thin}, "
                             f"got {checkpoint_every!r}")
    if batches is not None and not isinstance(batches, Minibatches):
        raise TypeError("batches must come from samplers.data.minibatches(data, batch_size), "
                        f"got {type(batches).__name__}")


def _adaptation(algorithm, params, info, options):
    """What warm-up adapts (an :class:`_Adapt`, or None), from the arguments of ``run`` and
    the sampler's info; resolved while the program is traced, once per configuration.

    Defaults: an adjusted sampler (one whose step reports an acceptance rate: MALA, MALT)
    adapts its step size and preconditioner whenever there is a warm-up; an unadjusted one
    (ULA, underdamped) keeps the step and preconditioner it was given, since they set its
    bias, unless asked (``adapt_step_size=True`` tunes it on the energy error)."""
    num_warmup = options.num_warmup
    adapt_step_size, adapt_mass_matrix = options.adapt_step_size, options.adapt_mass_matrix
    target_acceptance = options.target_acceptance
    tunable = getattr(params, "step_size", None) is not None and (
        hasattr(info, "acceptance_rate") or hasattr(info, "energy_error"))
    adjusted = hasattr(info, "acceptance_rate")
    if adapt_step_size is None:
        adapt_step_size = tunable and adjusted and num_warmup > 0
    if adapt_mass_matrix is None:
        adapt_mass_matrix = adjusted and tunable and num_warmup > 0
    if adapt_step_size and not tunable:
        raise ValueError(f"adapt_step_size=True needs a sampler with a tunable step size "
                         f"(mala, malt, ula, underdamped); {algorithm.name} has none")
    if adapt_mass_matrix and "inverse_mass_matrix" not in getattr(params, "_fields", ()):
        raise ValueError(f"adapt_mass_matrix=True needs a sampler with a preconditioner "
                         f"(mala, malt, ula, underdamped, sgld); {algorithm.name} has none")
    if target_acceptance is None:
        target_acceptance = adaptation.default_target(algorithm.name, info) if tunable else 0.5
    elif not adjusted:
        raise ValueError(f"target_acceptance applies to samplers with a Metropolis step "
                         f"(mala, malt); {algorithm.name} is tuned on its energy error")
    if num_warmup == 0 or not (adapt_step_size or adapt_mass_matrix):
        return None
    return _Adapt(bool(adapt_step_size), bool(adapt_mass_matrix), options.dense_mass,
                  options.adaptation == "ensemble", float(target_acceptance))


def _check_options(adaptation_kind, dense_mass, keep_warmup, target_acceptance, mesh,
                   num_chains):
    """The checks of ``run``'s warm-up and mesh arguments that need no tracing."""
    check_choice("adaptation", adaptation_kind, ("window", "ensemble"))
    check_bool("dense_mass", dense_mass)
    check_bool("keep_warmup", keep_warmup)
    if target_acceptance is not None and not 0.0 < target_acceptance < 1.0:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance!r}")
    if mesh is not None:
        check_mesh(mesh, num_chains, "num_chains")


def _check_chain_axis(initial_position, num_chains):
    for leaf in jax.tree.leaves(initial_position):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != num_chains:
            raise ValueError(f"initial_position with chain_axis=True must have a leading axis of "
                             f"size num_chains={num_chains}, got a leaf of shape {jnp.shape(leaf)}")


def _concat(chunks):
    """Join the (chain, draw, ...) records of consecutive chunks along the draw axis."""
    if len(chunks) == 1:
        return chunks[0]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *chunks)


def _trace(records, states, first_bad, params=None, grads=None, warmup=None) -> Trace:
    positions, stats = records
    warmup_positions, warmup_stats = (None, None) if warmup is None else warmup
    return Trace(positions, stats, states, first_bad, params, grads, warmup_positions,
                 warmup_stats)


def run(
    key: jax.Array,
    algorithm: Algorithm,
    initial_position: PyTree,
    num_steps: int,
    *,
    num_chains: int = 1,
    num_warmup: int = 0,
    thin: int = 1,
    chain_axis: bool = False,
    batches: Optional[Minibatches] = None,
    adapt_step_size: Optional[bool] = None,
    adapt_mass_matrix: Optional[bool] = None,
    dense_mass: bool = False,
    adaptation: str = "window",
    target_acceptance: Optional[float] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
    progress: Optional[bool] = None,
    on_nonfinite: str = "raise",
    checkpoint: Optional[str] = None,
    checkpoint_every: Optional[int] = None,
    keep_warmup: bool = False,
) -> Trace:
    """Run ``algorithm`` for ``num_warmup + num_steps`` steps on ``num_chains`` chains.

    Args:
      key: a ``jax.random.key`` (first, as in every function that draws); chain c uses
        ``fold_in``-derived keys of ``split(key)[c]``.
      algorithm: any :class:`samplers.Algorithm` (``samplers.mala(...)``, ...).
      initial_position: a position pytree, shared by all chains, or with a leading chain
        axis when ``chain_axis=True``.
      num_steps: steps after warm-up; every ``thin``-th is kept (``num_steps // thin`` draws).
      num_warmup: steps run first and discarded, during which the sampler's parameters are
        adapted (:mod:`samplers.adaptation`). Adjusted samplers (MALA, MALT) adapt by
        default; unadjusted ones (ULA, underdamped) keep their step size and preconditioner
        unless ``adapt_step_size`` / ``adapt_mass_matrix`` say otherwise.
      adapt_step_size: dual averaging of the step size towards ``target_acceptance``
        (adjusted samplers) or an energy error per dimension (unadjusted ones).
      adapt_mass_matrix: estimate the preconditioner (``inverse_mass_matrix``) from the
        draws of Stan's slow windows, diagonal or, with ``dense_mass=True``, dense; for MALT
        also its trajectory length and friction.
      adaptation: "window" (Stan's scheme, each chain for itself) or "ensemble" (the same
        windows with the covariance and the step size pooled over all chains). The
        ensemble version hits the target acceptance closely and estimates the
        preconditioner from short windows, but one shared step can leave chains stuck in a
        funnel's neck (eight schools at 128 chains: 11 chains never moved), so it is not
        the default.
      target_acceptance: default 0.574 for MALA, 0.8 for MALT.
      mesh: a ``jax.sharding.Mesh``: the chain axis is split over its first axis (devices
        of one host, or of many after ``jax.distributed.initialize``); the draws equal the
        single-device run's. ``num_chains`` must be a multiple of that axis's size.
      batches: ``samplers.data.minibatches(data, n)``: a fresh batch per step and chain.
      progress: a progress bar (tqdm) updated from inside the compiled loop about 50 times;
        default: on when stderr is a terminal.
      on_nonfinite: "raise" (a :class:`NonFiniteError` naming the chain and step, carrying
        the draws made so far) or "flag" (keep going; ``stats["diverging"]`` marks the draws).
      checkpoint, checkpoint_every: write the state and the draws to ``checkpoint`` (an .npz
        file, replaced atomically) every ``checkpoint_every`` steps; a run started again with
        the same arguments resumes from it and gives bit-identical draws.
      keep_warmup: also return the warm-up's draws and statistics
        (``trace.warmup_positions``, ``trace.warmup_stats``, with the step size each draw was
        made with), exported by ``to_arviz`` as ArviZ's ``warmup_posterior`` and
        ``warmup_sample_stats``: to see how the adaptation went.

    Returns:
      A :class:`samplers.Trace` with (chain, draw) leading axes, the parameters the draws
      were made with (``trace.params``, per chain) and the gradient evaluations of the whole
      run, warm-up included (``trace.num_grads``, per chain).
    """
    check_key("key", key, "run(key, algorithm, initial_position, num_steps)")
    _validate(algorithm, num_steps, num_chains, num_warmup, thin, on_nonfinite,
              checkpoint, checkpoint_every, batches)
    _check_options(adaptation, dense_mass, keep_warmup, target_acceptance, mesh, num_chains)
    if chain_axis:
        _check_chain_axis(initial_position, num_chains)
    if progress is None:
        progress = sys.stderr.isatty()
    total = num_warmup + num_steps
    options = _Options(num_chains, chain_axis, num_warmup, adapt_step_size, adapt_mass_matrix,
                       dense_mass, adaptation, target_acceptance, mesh,
                       _progress_chunk(total) if progress else 0, keep_warmup)
    run_id = next(_RUN_IDS)
    if progress:
        from tqdm.auto import tqdm
        _BARS[run_id] = tqdm(total=total, desc=algorithm.name, unit="step")
    try:
        params = None if algorithm.kernel is None else algorithm.params  # step: compiled in
        return _run(_static(algorithm), key, initial_position, params, batches,
                    np.int32(run_id), options, num_steps, thin, on_nonfinite, checkpoint,
                    checkpoint_every)
    finally:
        bar = _BARS.pop(run_id, None)
        if bar is not None:
            bar.close()


def _check_start(initial_position, lp0):
    """Raise when a chain starts at a non-finite position or log-density."""
    check_finite_position("initial_position", initial_position)
    if lp0 is None:
        return
    lp0 = np.asarray(lp0)
    if not np.all(np.isfinite(lp0)):
        bad = int(np.flatnonzero(~np.isfinite(lp0))[0])
        raise ValueError(f"initial_position has log-density {float(lp0[bad])} (chain {bad}): "
                         "start inside the support of the target")


def _check_finite(first_bad, records_so_far, states, on_nonfinite):
    first_bad = np.asarray(first_bad)
    if on_nonfinite == "raise" and np.any(first_bad >= 0):
        chain = int(np.argmax(np.where(first_bad >= 0, -first_bad, -np.inf)))
        trace = (_trace(_concat(records_so_far), states, first_bad)
                 if records_so_far else None)
        raise NonFiniteError(
            f"chain {chain} turned non-finite (NaN or inf) at step {int(first_bad[chain])}; "
            "lower the step size, or pass on_nonfinite='flag' to keep going", trace)


def _run(algorithm, key, initial_position, params, batches, run_id, options, num_steps, thin,
         on_nonfinite, checkpoint, checkpoint_every):
    num_draws = num_steps // thin
    if checkpoint is None:
        ok, lp0, (states, params, first_bad, grads, warm), records = _whole(
            algorithm, key, initial_position, params, batches, run_id, options=options,
            num_draws=num_draws, thin=thin)
        if not ok:  # the one transfer to the host of a run that went well
            _check_start(initial_position, lp0)
            _check_finite(first_bad, [records], states, on_nonfinite)
        return _trace(records, states, first_bad, params, grads, warm)

    num_warmup = options.num_warmup
    chunk = num_draws if checkpoint_every is None else checkpoint_every // thin
    sample = functools.partial(_sample_chunk, algorithm, batches=batches, run_id=run_id,
                               thin=thin, every=options.every)
    fingerprint = _fingerprint(algorithm, key, initial_position, params, num_steps=num_steps,
                               thin=thin, options=options._replace(every=0),
                               batches=None if batches is None else batches.batch_size)
    start = functools.partial(_start, algorithm, key, initial_position, params, batches,
                              run_id, options=options)
    done, chunks = 0, []
    if os.path.exists(checkpoint):
        chain_keys, _, _, carry_like = jax.eval_shape(start)
        states, params, first_bad, grads, _ = carry_like
        records_like = jax.eval_shape(
            lambda s, f, g, k, p: sample(s, f, g, chain_keys=k, params=p, first_step=0,
                                         num_draws=1)[3],
            states, first_bad, grads, chain_keys, params)
        done, carry, records = _load_checkpoint(checkpoint, fingerprint, carry_like,
                                                records_like)
        chain_keys = jax.random.split(key, options.num_chains)  # as _setup derives them
        chunks = [records] if records is not None else []
    else:
        chain_keys, ok, lp0, carry = start()
        if not ok:
            _check_start(initial_position, lp0)
        _check_finite(carry[2], [], carry[0], on_nonfinite)
        _save_checkpoint(checkpoint, fingerprint, 0, carry, ())
    states, params, first_bad, grads, warm = carry

    while done < num_draws:
        n = min(chunk, num_draws - done)
        states, first_bad, grads, records = sample(
            states, first_bad, grads, chain_keys=chain_keys, params=params,
            first_step=num_warmup + done * thin, num_draws=n)
        chunks.append(records)
        done += n
        _check_finite(first_bad, chunks, states, on_nonfinite)
        chunks = [_concat(chunks)]
        _save_checkpoint(checkpoint, fingerprint, done, (states, params, first_bad, grads, warm),
                         chunks[0])
    return _trace(chunks[0], states, first_bad, params, grads, warm)

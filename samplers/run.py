"""The driver: ``samplers.run`` runs any :class:`~samplers.base.Algorithm` for many steps.

One compiled ``lax.scan`` over steps; chains are vectorised with ``vmap`` inside each step,
so a progress report is a single un-batched ``jax.debug.callback`` every few hundred steps.
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
from .base import Algorithm, PyTree, check_finite_position, check_key, tree_all_finite
from .data import Minibatches
from .trace import Trace

__all__ = ["run", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """A chain turned NaN or infinite. ``trace`` holds the draws made before it was raised."""

    def __init__(self, message: str, trace: Trace):
        super().__init__(message)
        self.trace = trace


# ----------------------------------------------------------------------- progress bar

_BARS: dict[int, Any] = {}
_RUN_IDS = itertools.count()


def _report(run_id, steps_done):
    bar = _BARS.get(int(run_id))
    if bar is not None and int(steps_done) > bar.n:
        bar.update(int(steps_done) - bar.n)


def _maybe_report(run_id, steps_done, every):
    jax.lax.cond(steps_done % every == 0,
                 lambda: jax.debug.callback(_report, run_id, steps_done),
                 lambda: None)


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


def _finite(states):
    """(chain,) True where the state is finite: its log-density when the sampler keeps one
    (a scalar per chain, so the guard costs O(1) per step), else every position entry."""
    logdensity = getattr(states, "logdensity", None)
    if logdensity is not None:
        return jnp.isfinite(logdensity)
    return jax.vmap(tree_all_finite)(states.position)


def _mark_nonfinite(first_bad, states, t):
    return jnp.where((first_bad < 0) & ~_finite(states), t, first_bad).astype(first_bad.dtype)


def _num_grads(info, num_chains):
    """Gradient evaluations of one step per chain: a trajectory's length, else 1."""
    steps = getattr(info, "num_integration_steps", None)
    return jnp.ones((num_chains,), jnp.int32) if steps is None else steps.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_chains",))
def _chain_keys(key, num_chains):
    """Independent per-chain keys, and the keys their ``init`` uses."""
    chain_keys = jax.random.split(key, num_chains)
    return chain_keys, jax.vmap(lambda k: jax.random.fold_in(k, 2**31 - 1))(chain_keys)


@functools.partial(jax.jit, static_argnames=("algorithm",))
def _init(algorithm, positions, keys):
    return jax.vmap(algorithm.init)(positions, keys)


class _Adapt(NamedTuple):
    """What warm-up adapts (static)."""

    step_size: bool
    mass_matrix: bool
    dense_mass: bool
    pooled: bool
    target: float


@functools.partial(jax.jit, static_argnames=("algorithm", "num_warmup", "adapt", "every"))
def _warmup(algorithm, states, chain_keys, batches, params, run_id, *, num_warmup, adapt, every):
    """``num_warmup`` steps, adapting ``params`` (:mod:`samplers.adaptation`) as ``adapt``
    says; returns the states, the adapted parameters and each chain's gradient count."""
    num_chains = chain_keys.shape[0]
    first_bad = jnp.full((num_chains,), -1, jnp.int32)
    grads = jnp.zeros((num_chains,), jnp.int32)
    tuning = adapt is not None and (adapt.step_size or adapt.mass_matrix)
    if tuning:
        dim = sum(math.prod(x.shape[1:]) for x in jax.tree.leaves(states.position))
        window = jax.vmap(functools.partial(
            adaptation.window_init, dim=dim, adapt_mass_matrix=adapt.mass_matrix,
            dense_mass=adapt.dense_mass))(params)
        params = window.params
        slow, end = adaptation.window_schedule(num_warmup)
        update = jax.vmap(functools.partial(
            adaptation.window_update, target=adapt.target, adapt_step_size=adapt.step_size,
            adapt_mass_matrix=adapt.mass_matrix, dense_mass=adapt.dense_mass,
            axis_name="chain" if adapt.pooled else None),
            in_axes=(0, None, None, 0, 0), axis_name="chain")
    else:
        window, slow, end = None, np.zeros(num_warmup, bool), np.zeros(num_warmup, bool)

    def body(carry, xs):
        states, window, first_bad, grads = carry
        t, slow_t, end_t = xs
        step_params = window.params if tuning else params
        states, info = _transition(algorithm, states, chain_keys, t, batches, step_params)
        if tuning:
            flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
            statistic = adaptation.tuning_statistic(info, flat.shape[1])
            window = update(window, slow_t, end_t, flat, statistic)
        first_bad = _mark_nonfinite(first_bad, states, t)
        grads = grads + _num_grads(info, num_chains)
        if every:
            _maybe_report(run_id, t + 1, every)
        return (states, window, first_bad, grads), None

    xs = (jnp.arange(num_warmup), jnp.asarray(slow), jnp.asarray(end))
    (states, window, first_bad, grads), _ = jax.lax.scan(
        body, (states, window, first_bad, grads), xs)
    if tuning:
        params = jax.vmap(functools.partial(adaptation.window_final,
                                            adapt_step_size=adapt.step_size))(window)
    return states, params, first_bad, grads


@functools.partial(jax.jit, static_argnames=("algorithm", "num_draws", "thin", "every"))
def _sample(algorithm, states, first_bad, grads, chain_keys, batches, params, first_step, run_id,
            *, num_draws, thin, every):
    """``num_draws * thin`` steps from global step ``first_step``, keeping every ``thin``-th."""
    num_chains = chain_keys.shape[0]

    def one_step(carry, t):
        states, first_bad, grads = carry
        states, info = _transition(algorithm, states, chain_keys, t, batches, params)
        first_bad = _mark_nonfinite(first_bad, states, t)
        return (states, first_bad, grads + _num_grads(info, num_chains)), info

    def draw(carry, i):
        last = first_step + (i + 1) * thin - 1
        if thin > 1:  # the thinned-out steps, then the kept one (no nested loop when thin = 1)
            carry, _ = jax.lax.scan(lambda c, t: (one_step(c, t)[0], None), carry,
                                    last - thin + 1 + jnp.arange(thin - 1))
        carry, info = one_step(carry, last)
        states = carry[0]
        if every:
            _maybe_report(run_id, last + 1, every)
        return carry, (states.position, _draw_stats(info, states, params))

    (states, first_bad, grads), records = jax.lax.scan(
        draw, (states, first_bad, grads), jnp.arange(num_draws))
    return states, first_bad, grads, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), records)


def _draw_stats(info, states, params) -> dict:
    """Statistics of one draw with ArviZ's names, one value per chain."""
    stats = dict(getattr(info, "_asdict", dict)())
    if getattr(states, "logdensity", None) is not None:
        stats["lp"] = states.logdensity
    stats["diverging"] = stats.get("diverging", False) | ~_finite(states)
    step_size = getattr(params, "step_size", None)
    if step_size is not None and "step_size" not in stats:
        stats["step_size"] = step_size
    return stats


# ------------------------------------------------------------------------- checkpoints

def _to_numpy(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf))
    return np.asarray(leaf)


def _from_numpy(array, like):
    if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(jnp.asarray(array), impl=jax.random.key_impl(like))
    return jnp.asarray(array, dtype=like.dtype)


def _save_checkpoint(path, fingerprint, draws_done, carry, records):
    """Write atomically: a temporary file, fsync, then rename over the last checkpoint."""
    arrays = {"fingerprint": np.asarray(fingerprint), "draws_done": np.asarray(draws_done)}
    for name, tree in (("carry", carry), ("records", records)):
        for i, leaf in enumerate(jax.tree.leaves(tree)):
            arrays[f"{name}_{i}"] = _to_numpy(leaf)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_checkpoint(path, fingerprint, carry_like, records_like):
    with np.load(path) as f:
        if str(f["fingerprint"]) != fingerprint:
            raise ValueError(
                f"checkpoint {path!r} was written by a different run (another algorithm, key, "
                "initial position or length); delete it or pass another checkpoint path")

        def restore(name, like):
            leaves, treedef = jax.tree.flatten(like)
            return jax.tree.unflatten(
                treedef, [_from_numpy(f[f"{name}_{i}"], x) for i, x in enumerate(leaves)])

        draws_done = int(f["draws_done"])
        records = restore("records", records_like) if draws_done else None
        return draws_done, restore("carry", carry_like), records


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
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if num_steps % thin:
        raise ValueError(f"num_steps must be a multiple of thin={thin}, got {num_steps}")
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'flag', got {on_nonfinite!r}")
    if checkpoint_every is not None:
        if checkpoint is None:
            raise ValueError("checkpoint_every needs checkpoint=<path>")
        if not isinstance(checkpoint_every, int) or checkpoint_every < thin or checkpoint_every % thin:
            raise ValueError(f"checkpoint_every must be a positive multiple of thin={thin}, "
                             f"got {checkpoint_every!r}")
    if batches is not None and not isinstance(batches, Minibatches):
        raise TypeError("batches must come from samplers.data.minibatches(data, batch_size), "
                        f"got {type(batches).__name__}")


def _adaptation(algorithm, states, params, batches, num_warmup, num_chains, adapt_step_size,
                adapt_mass_matrix, dense_mass, adaptation_kind, target_acceptance):
    """What warm-up adapts (an :class:`_Adapt`, or None), from the arguments of ``run``.

    Defaults: an adjusted sampler (one whose step reports an acceptance rate: MALA, MALT)
    adapts its step size and preconditioner whenever there is a warm-up; an unadjusted one
    (ULA, underdamped) keeps the step and preconditioner it was given, since they set its
    bias, unless asked (``adapt_step_size=True`` tunes it on the energy error)."""
    if adaptation_kind not in ("window", "ensemble"):
        raise ValueError(f"adaptation must be 'window' or 'ensemble', got {adaptation_kind!r}")
    if not isinstance(dense_mass, bool):
        raise TypeError(f"dense_mass must be True or False, got {dense_mass!r}")
    info = None
    if params is not None:
        one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), (states, params))
        key = jax.random.key(0)
        batch = None if batches is None else jax.eval_shape(batches.sample, key)
        _, info = jax.eval_shape(lambda s, p, b: algorithm.kernel(key, s, b, p), *one, batch)
    tunable = info is not None and getattr(params, "step_size", None) is not None and (
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
    elif not hasattr(info, "acceptance_rate"):
        raise ValueError(f"target_acceptance applies to samplers with a Metropolis step "
                         f"(mala, malt); {algorithm.name} is tuned on its energy error")
    elif not 0.0 < target_acceptance < 1.0:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance!r}")
    if num_warmup == 0 or not (adapt_step_size or adapt_mass_matrix):
        return None
    pooled = adaptation_kind == "ensemble"
    return _Adapt(bool(adapt_step_size), bool(adapt_mass_matrix), dense_mass, pooled,
                  float(target_acceptance))


def _initial_positions(initial_position, num_chains, chain_axis):
    if not chain_axis:
        return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (num_chains,) + jnp.shape(x)),
                            initial_position)
    for leaf in jax.tree.leaves(initial_position):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != num_chains:
            raise ValueError(f"initial_position with chain_axis=True must have a leading axis of "
                             f"size num_chains={num_chains}, got a leaf of shape {jnp.shape(leaf)}")
    return jax.tree.map(jnp.asarray, initial_position)


def _concat(chunks):
    """Join the (chain, draw, ...) records of consecutive chunks along the draw axis."""
    if len(chunks) == 1:
        return chunks[0]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *chunks)


def _trace(records, states, first_bad, params=None, grads=None) -> Trace:
    positions, stats = records
    return Trace(positions, stats, states, first_bad, params, grads)


def _shard(tree, mesh):
    """Put the leading (chain) axis of every leaf on the first axis of ``mesh``."""
    spec = jax.sharding.PartitionSpec(mesh.axis_names[0])
    sharding = jax.sharding.NamedSharding(mesh, spec)
    return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


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

    Returns:
      A :class:`samplers.Trace` with (chain, draw) leading axes, the parameters the draws
      were made with (``trace.params``, per chain) and the gradient evaluations of the whole
      run, warm-up included (``trace.num_grads``, per chain).
    """
    check_key("key", key, "run(key, algorithm, initial_position, num_steps)")
    _validate(algorithm, num_steps, num_chains, num_warmup, thin, on_nonfinite,
              checkpoint, checkpoint_every, batches)
    check_finite_position("initial_position", initial_position)
    if mesh is not None:
        if not isinstance(mesh, jax.sharding.Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
        size = mesh.shape[mesh.axis_names[0]]
        if num_chains % size:
            raise ValueError(f"num_chains must be a multiple of the mesh axis "
                             f"{mesh.axis_names[0]!r} size {size}, got {num_chains}")

    chain_keys, init_keys = _chain_keys(key, num_chains)
    positions = _initial_positions(initial_position, num_chains, chain_axis)
    static = _static(algorithm)
    params = (None if algorithm.kernel is None else
              jax.tree.map(lambda x: jnp.broadcast_to(x, (num_chains,) + jnp.shape(x)),
                           algorithm.params))
    if mesh is not None:
        chain_keys, init_keys, positions, params = _shard(
            (chain_keys, init_keys, positions, params), mesh)
    states = _init(static, positions, init_keys)
    lp0 = getattr(states, "logdensity", None)
    if lp0 is not None and not np.all(np.isfinite(np.asarray(lp0))):
        bad = int(np.flatnonzero(~np.isfinite(np.asarray(lp0)))[0])
        raise ValueError(f"initial_position has log-density {float(np.asarray(lp0)[bad])} "
                         f"(chain {bad}): start inside the support of the target")
    adapt = _adaptation(algorithm, states, params, batches, num_warmup, num_chains, adapt_step_size,
                        adapt_mass_matrix, dense_mass, adaptation, target_acceptance)

    if progress is None:
        progress = sys.stderr.isatty()
    total = num_warmup + num_steps
    every = max(1, total // 50) if progress else 0
    run_id = next(_RUN_IDS)
    if progress:
        from tqdm.auto import tqdm
        _BARS[run_id] = tqdm(total=total, desc=algorithm.name, unit="step")
    try:
        return _run(static, states, chain_keys, positions, key, batches, params,
                    num_steps, num_chains, num_warmup, thin, adapt, on_nonfinite, checkpoint,
                    checkpoint_every, run_id, every)
    finally:
        bar = _BARS.pop(run_id, None)
        if bar is not None:
            bar.close()


def _check_finite(first_bad, records_so_far, states, on_nonfinite):
    first_bad = np.asarray(first_bad)
    if on_nonfinite == "raise" and np.any(first_bad >= 0):
        chain = int(np.argmax(np.where(first_bad >= 0, -first_bad, -np.inf)))
        trace = (_trace(_concat(records_so_far), states, first_bad)
                 if records_so_far else None)
        raise NonFiniteError(
            f"chain {chain} turned non-finite (NaN or inf) at step {int(first_bad[chain])}; "
            "lower the step size, or pass on_nonfinite='flag' to keep going", trace)


def _run(algorithm, states, chain_keys, positions, key, batches, params, num_steps,
         num_chains, num_warmup, thin, adapt, on_nonfinite, checkpoint, checkpoint_every,
         run_id, every):
    run_id = jnp.asarray(run_id, jnp.int32)
    num_draws = num_steps // thin
    chunk = num_draws if checkpoint_every is None else checkpoint_every // thin
    first_bad = jnp.full((num_chains,), -1, jnp.int32)
    grads = jnp.zeros((num_chains,), jnp.int32)
    sample = functools.partial(_sample, algorithm, chain_keys=chain_keys, batches=batches,
                               run_id=run_id, thin=thin, every=every)
    done, chunks = 0, []
    if checkpoint is not None:
        fingerprint = _fingerprint(algorithm, key, positions, params, num_steps=num_steps,
                                   num_warmup=num_warmup, thin=thin, num_chains=num_chains,
                                   adapt=adapt,
                                   batches=None if batches is None else batches.batch_size)
    if checkpoint is not None and os.path.exists(checkpoint):
        warm_params = params  # the adapted parameters' shapes (a mass matrix may be added)
        if num_warmup:
            warm_params = jax.eval_shape(
                lambda: _warmup(algorithm, states, chain_keys, batches, params, run_id,
                                num_warmup=num_warmup, adapt=adapt, every=0)[1])
        records_like = jax.eval_shape(
            lambda s, p: sample(s, first_bad, grads, params=p, first_step=0, num_draws=1)[3],
            states, warm_params)
        carry_like = (states, first_bad, grads, warm_params)
        done, (states, first_bad, grads, params), records = _load_checkpoint(
            checkpoint, fingerprint, carry_like, records_like)
        chunks = [records] if records is not None else []
    else:
        if num_warmup:
            states, params, first_bad, grads = _warmup(
                algorithm, states, chain_keys, batches, params, run_id,
                num_warmup=num_warmup, adapt=adapt, every=every)
            _check_finite(first_bad, [], states, on_nonfinite)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, fingerprint, 0, (states, first_bad, grads, params), ())

    while done < num_draws:
        n = min(chunk, num_draws - done)
        states, first_bad, grads, records = sample(
            states, first_bad, grads, params=params, first_step=num_warmup + done * thin,
            num_draws=n)
        chunks.append(records)
        done += n
        _check_finite(first_bad, chunks, states, on_nonfinite)
        if checkpoint is not None:
            chunks = [_concat(chunks)]
            _save_checkpoint(checkpoint, fingerprint, done, (states, first_bad, grads, params),
                             chunks[0])
    return _trace(_concat(chunks), states, first_bad, params, grads)

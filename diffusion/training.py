"""Training a diffusion network by denoising score matching [Vincent2011; Song2021,
eq. 7] in the parameterisation it predicts.

:func:`train` fits any batched :class:`diffusion.Network` (``apply_fn(params, x, t, cond)``;
a U-Net from :func:`diffusion.nets.unet`, a Flax or Equinox model behind a closure) with an
optax optimizer, an exponential moving average of the weights, classifier-free-guidance
condition dropout and atomic checkpoints. With x_t = alpha_t x_0 + sigma_t e, e ~ N(0, I),
t ~ U[t_min, t_max], a minibatch's loss is the mean over its points of the squared residual
summed over the event dimensions, where the residual is (:func:`denoising_loss`)

* ``"eps"``: eps_theta - e ([Ho2020, eq. 14]: DSM with weight lambda(t) = sigma_t^2);
* ``"x0"``: x0_theta - x_0;
* ``"v"``: v_theta - (alpha_t e - sigma_t x_0) [Salimans2022, Sec. 4];
* ``"score"``: sigma_t s_theta + e ([Song2021, eq. 7] with lambda(t) = sigma_t^2);
* ``"edm"`` [Karras2022, Table 1 and eq. 8]: ln sigma ~ N(P_mean, P_std^2) with
  P_mean = -1.2, P_std = 1.2 (``EDM_P_MEAN``, ``EDM_P_STD``), x~ = x_0 + sigma e in EDM's
  scale, and the residual F_theta(c_in x~; c_noise) - (x_0 - c_skip x~) / c_out: their loss
  lambda(sigma) ||D - x_0||^2 with lambda = (sigma^2 + sd^2) / (sigma sd)^2 = 1 / c_out^2,
  written in F. sigma is drawn as EDM does, not from t: the network sees only (c_in x~,
  c_noise), which is how :func:`diffusion.networks.eps_function` calls it under any SDE, so
  ``t_min``/``t_max`` do not apply.

As weights on the data-prediction error ||x0_theta - x_0||^2 these are SNR = alpha_t^2 /
sigma_t^2 (eps, score), 1 (x0), SNR + 1 (v, for VP: the "SNR+1" weighting of [Salimans2022,
Sec. 4]) and 1/sigma^2 + 1/sd^2 (EDM). Every target's minimiser is the same conditional
expectation (E[e | x_t] and its affine images), so a network trained in one form samples
through the conversions of :mod:`diffusion.networks`. :func:`train_score` keeps the built-in
MLP's API on top of :func:`train`; :func:`learned_score` turns its parameters into a
per-point score.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import sys
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplers.base import as_float
from samplers.validation import check_int
from samplers.checkpoint import load as _load_checkpoint, save as _save_checkpoint

from .nets import MLP
from .networks import Network, apply_checked, check_conditions, edm_preconditioning
from .scores import from_noise_predictor
from .solvers import _check_sde, _check_times

__all__ = ["TrainResult", "train", "draw_batch", "denoising_loss", "train_score",
           "learned_score"]

EDM_P_MEAN = -1.2  # [Karras2022, Table 1]: ln sigma ~ N(P_mean, P_std^2) in training
EDM_P_STD = 1.2
CHECKPOINTS = 10  # checkpoints per run when checkpoint_every is not given
PROGRESS_UPDATES = 20  # progress-bar updates per run
DEFAULT_OPTIMIZER = optax.adam(1e-3)  # one object, so runs with the default share a compilation


class TrainResult(NamedTuple):
    """What :func:`train` returns: the final ``params``, their exponential moving average
    ``ema_params`` (None when ``ema=None``) and the per-step minibatch ``losses`` (steps,)."""

    params: Any
    ema_params: Optional[Any]
    losses: jax.Array


def draw_batch(key, data, cond, null_cond, *, batch_size: int, cond_drop):
    """One minibatch: ``batch_size`` rows of ``data`` (n, *shape) drawn uniformly with
    replacement, and their rows of ``cond`` (a pytree whose leaves have n rows, or None),
    each replaced by ``null_cond`` (one row of ``cond``) with probability ``cond_drop``
    independently (classifier-free guidance training; [Ho2022, Algorithm 1]).
    ``null_cond=None`` drops nothing. Returns ``(x0, cond_batch)``. Pure and jittable."""
    k_rows, k_drop = jax.random.split(key)
    rows = jax.random.randint(k_rows, (batch_size,), 0, data.shape[0])
    batch = jax.tree.map(lambda leaf: leaf[rows], cond)
    if cond is None or null_cond is None:
        return data[rows], batch
    drop = jax.random.bernoulli(k_drop, cond_drop, (batch_size,))

    def replace(leaf, null):
        mask = drop.reshape((batch_size,) + (1,) * (leaf.ndim - 1))
        return jnp.where(mask, jnp.asarray(null, leaf.dtype), leaf)

    return data[rows], jax.tree.map(replace, batch, null_cond)


def denoising_loss(params, key, x0, cond, sde, network: Network, t_min, t_max):
    """Monte Carlo denoising loss of ``network`` (its ``prediction``; see the module
    docstring for each target) on a batch ``x0`` (b, *shape) with conditions ``cond`` (b
    rows, or None): one noise level and one noise draw per point; the mean over the batch of
    the squared residual summed over the event dimensions."""
    k_t, k_e = jax.random.split(key)
    b = x0.shape[0]
    e = jax.random.normal(k_e, x0.shape, x0.dtype)

    def rows(v):
        return v.reshape((b,) + (1,) * (x0.ndim - 1))

    kind = network.prediction
    if kind == "edm":
        sigma = jnp.exp(EDM_P_MEAN + EDM_P_STD * jax.random.normal(k_t, (b,), x0.dtype))
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, network.sigma_data)
        x = x0 + rows(sigma) * e
        pred = apply_checked(network, params, rows(c_in) * x, c_noise, cond)
        residual = pred - (x0 - rows(c_skip) * x) / rows(c_out)
    else:
        t = jax.random.uniform(k_t, (b,), x0.dtype, t_min, t_max)
        a, s = rows(sde.alpha(t)), rows(sde.sigma(t))
        pred = apply_checked(network, params, a * x0 + s * e, sde.model_time(t), cond)
        if kind == "eps":
            residual = pred - e
        elif kind == "x0":
            residual = pred - x0
        elif kind == "v":
            residual = pred - (a * e - s * x0)
        else:  # "score"
            residual = s * pred + e
    return jnp.mean(jnp.sum(residual.reshape(b, -1) ** 2, -1))


def _step(state, step, *, key, data, cond, null_cond, cond_drop, t_min, t_max, ema, sde,
          network, optimizer, batch_size):
    """One optimizer step, number ``step`` (its key is ``fold_in(key, step)``); the EMA
    (when ``state`` carries one) follows ema <- d ema + (1 - d) params."""
    params, opt_state, ema_params = state
    k_batch, k_loss = jax.random.split(jax.random.fold_in(key, step))
    x0, c = draw_batch(k_batch, data, cond, null_cond, batch_size=batch_size,
                       cond_drop=cond_drop)
    loss, grads = jax.value_and_grad(denoising_loss)(params, k_loss, x0, c, sde, network,
                                                     t_min, t_max)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if ema_params is not None:
        ema_params = jax.tree.map(lambda m, p: ema.astype(m.dtype) * m
                                  + (1 - ema.astype(m.dtype)) * p, ema_params, params)
    return (params, opt_state, ema_params), loss


@functools.partial(jax.jit, static_argnames=("sde", "network", "optimizer", "batch_size",
                                             "length"))
def _chunk(state, first, key, data, cond, null_cond, cond_drop, t_min, t_max, ema, *, sde,
           network, optimizer, batch_size, length):
    """Steps ``first .. first + length - 1`` as one ``lax.scan``; data, conditions and
    hyperparameters are traced (new values do not recompile)."""
    step = functools.partial(_step, key=key, data=data, cond=cond, null_cond=null_cond,
                             cond_drop=cond_drop, t_min=t_min, t_max=t_max, ema=ema, sde=sde,
                             network=network, optimizer=optimizer, batch_size=batch_size)
    return jax.lax.scan(step, state, first + jnp.arange(length))


def _check_fraction(name, value, what, *, allow_one):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1{']' if allow_one else ')'} "
                        f"({what}), got {value!r}") from None
    if not (0.0 <= v <= 1.0) or (v == 1.0 and not allow_one):
        raise ValueError(f"{name} must be in [0, 1{']' if allow_one else ')'} ({what}), "
                         f"got {value!r}")
    return v


def _check_data(data):
    data = as_float(jnp.asarray(data))
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"data must be a batch of shape (num_points, *shape) with "
                         f"num_points >= 1, got shape {data.shape}")
    return data


def _fingerprint(key, data, cond, null_cond, params, state, **config) -> str:
    """A digest of everything a resumed run must share with the one that wrote the
    checkpoint (the number of steps excepted: a run may be extended)."""
    shapes = [(jnp.shape(leaf), str(jnp.result_type(leaf))) for leaf in jax.tree.leaves(state)]
    digest = hashlib.sha256(repr((sorted(config.items()), jax.tree.structure(state), shapes))
                            .encode())
    for leaf in jax.tree.leaves((jax.random.key_data(key), data, cond, null_cond, params)):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def train(key, data, sde, network: Network, params, *, steps: int, batch_size: int = 256,
          optimizer=None, ema: Optional[float] = 0.999, cond=None, cond_drop: float = 0.1,
          null_cond=None, checkpoint=None, checkpoint_every: Optional[int] = None,
          t_min=None, t_max=None, progress: Optional[bool] = None) -> TrainResult:
    """Train ``network`` from ``params`` on ``data`` by denoising score matching in the form
    of ``network.prediction`` (eps, x0, v, score or EDM; see the module docstring).

    Args:
      key: a ``jax.random`` key; step k uses ``fold_in(key, k)``, so a run does not depend on
        how it is cut into chunks.
      data: (n, *shape) training points (integers are converted to floats).
      sde: the forward SDE the network is trained (and later sampled) under; the network is
        called with ``sde.model_time(t)`` (EDM: with c_noise).
      network: a :class:`diffusion.Network`; ``params`` its initial parameters (a pytree).
      steps: optimizer steps; ``batch_size`` points per step (drawn with replacement).
      optimizer: an optax ``GradientTransformation`` (default ``optax.adam(1e-3)``).
      ema: decay d of the exponential moving average of the weights, ema_0 = params_0 and
        ema_k = d ema_{k-1} + (1 - d) params_k ([Song2020, technique 5]; [Ho2020]
        sample with it); None: no average.
      cond: one condition per datum (a pytree whose leaves have n rows: class labels, an
        embedding), or None for an unconditional network.
      cond_drop, null_cond: each minibatch row's condition is replaced by ``null_cond``
        with probability ``cond_drop`` (classifier-free guidance; [Ho2022]).
        ``null_cond`` is ONE condition (one row of ``cond``), the same value that
        :func:`diffusion.sample` takes as ``null_cond`` for the unconditional prediction
        (for :func:`diffusion.nets.unet` with ``num_classes=K``, the label K, which is also
        what its ``cond=None`` means). Needed when ``cond`` is given and ``cond_drop > 0``.
      checkpoint: a file path; params, EMA, optimizer state, step count and losses are
        written there (atomically: a temporary file, then a rename) every
        ``checkpoint_every`` steps (default: ``steps / 10``). A call that finds the file
        resumes from it and continues bit-identically to an uninterrupted run, provided its
        arguments are the same (checked by a digest of key, data, conditions, initial
        params and settings; the optimizer's hyperparameters are not in it, only its state's
        structure). ``steps`` may be larger than the checkpoint's: the run is extended.
      t_min, t_max: range of the uniform training time (default: the SDE's); not for EDM.
      progress: a tqdm bar updated between compiled chunks (default: when stderr is a
        terminal).
    Returns a :class:`TrainResult` ``(params, ema_params, losses)``.

    Each chunk of steps is one compiled ``lax.scan`` of the jitted step; data, conditions
    and hyperparameters are traced arguments. ``network`` and ``optimizer`` are compared by
    identity: build them once.
    """
    _check_sde(sde)
    if not isinstance(network, Network):
        raise TypeError(f"network must be a diffusion.Network(apply_fn, prediction=...), got "
                        f"{network!r}")
    data = _check_data(data)
    steps = check_int("steps", steps)
    batch_size = check_int("batch_size", batch_size)
    if ema is not None:
        ema = _check_fraction("ema", ema, "the EMA decay; None for no average", allow_one=False)
    cond_drop = _check_fraction("cond_drop", cond_drop, "a probability", allow_one=True)
    check_conditions(network, data.shape[0], params, cond, null_cond, None)
    if cond is not None and cond_drop > 0 and null_cond is None:
        raise ValueError(f"cond_drop={cond_drop!r} replaces dropped conditions by null_cond, one "
                         "row of cond (the value sample(..., null_cond=) gets; for "
                         "nets.unet(num_classes=K) the label K); pass null_cond, or cond_drop=0")
    if network.prediction == "edm":
        if t_min is not None or t_max is not None:
            raise ValueError(f"t_min and t_max do not apply to prediction='edm' (sigma is drawn "
                             f"log-normal, Karras et al. 2022 Table 1), got t_min={t_min!r}, "
                             f"t_max={t_max!r}")
        t_min, t_max = sde.t_min, sde.t_max
    else:
        t_min, t_max = _check_times(sde, t_min, t_max)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path, got {checkpoint!r}")
    if checkpoint_every is not None:
        if checkpoint is None:
            raise ValueError("checkpoint_every needs checkpoint=<path>")
        checkpoint_every = check_int("checkpoint_every", checkpoint_every)
    if not jax.tree.leaves(params) or not all(
            jnp.issubdtype(jnp.result_type(leaf), jnp.floating) for leaf in jax.tree.leaves(params)):
        raise TypeError(f"params must be a non-empty pytree of floating arrays, got leaves of "
                        f"dtypes {[str(jnp.result_type(x)) for x in jax.tree.leaves(params)]}")
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax GradientTransformation (e.g. "
                        f"optax.adam(1e-3)), got {optimizer!r}")
    if progress is None:
        progress = sys.stderr.isatty()

    params = jax.tree.map(jnp.asarray, params)
    state = (params, optimizer.init(params), None if ema is None else params)
    if checkpoint is None:
        chunk = steps
    else:
        chunk = checkpoint_every or math.ceil(steps / CHECKPOINTS)
    if progress:
        chunk = min(chunk, math.ceil(steps / PROGRESS_UPDATES))
    dtype = data.dtype
    traced = dict(key=key, data=data, cond=cond, null_cond=null_cond,
                  cond_drop=jnp.asarray(cond_drop, dtype), t_min=jnp.asarray(t_min, dtype),
                  t_max=jnp.asarray(t_max, dtype), ema=jnp.asarray(ema or 0.0, dtype))
    done, losses = 0, []
    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
        fingerprint = _fingerprint(key, data, cond, null_cond, params, state, sde=repr(sde),
                                   prediction=network.prediction,
                                   sigma_data=network.sigma_data, batch_size=batch_size,
                                   ema=ema, cond_drop=cond_drop, t_min=t_min, t_max=t_max)
        if os.path.exists(checkpoint):
            done, state, loaded = _load_checkpoint(checkpoint, fingerprint, state,
                                                   jnp.zeros((0,), dtype))
            if done > steps:
                raise ValueError(f"checkpoint {checkpoint!r} holds {done} steps, more than "
                                 f"steps={steps}; pass steps >= {done} or another path")
            losses = [] if loaded is None else [loaded]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=done, desc="train", unit="step")
    try:
        while done < steps:
            n = min(chunk, steps - done)
            state, chunk_losses = _chunk(state, jnp.asarray(done, jnp.int32), **traced, sde=sde,
                                         network=network, optimizer=optimizer,
                                         batch_size=batch_size, length=n)
            losses.append(chunk_losses)
            done += n
            if checkpoint is not None:
                losses = [jnp.concatenate(losses)]
                _save_checkpoint(checkpoint, fingerprint, done, state, losses[0])
            if bar is not None:
                bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    return TrainResult(state[0], state[2], jnp.concatenate(losses))


@functools.lru_cache(maxsize=64)
def _mlp_network(model: MLP) -> Network:
    """The per-point MLP as a batched eps :class:`Network` (one per model, so a model
    trained twice compiles once)."""
    batched = jax.vmap(model.apply, (None, 0, 0))
    return Network(lambda params, x, t, cond: batched(params, x, t), prediction="eps")


def train_score(key, data, sde, *, model: MLP, steps: int = 2000, optimizer=None,
                batch_size: int = 256, t_min=None, t_max=None, return_losses: bool = False):
    """Train the built-in MLP ``model`` (:func:`diffusion.nets.mlp`) as a noise predictor on
    ``data`` (n, d): :func:`train` with ``prediction="eps"``, no EMA, parameters initialised
    from ``key``. Returns ``params`` (and the per-step losses if ``return_losses``)."""
    data = _check_data(data)
    if data.ndim != 2:
        raise ValueError(f"data must have shape (num_points, d), got shape {data.shape}")
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a diffusion.nets.MLP (from diffusion.nets.mlp), got {model!r}")
    k_init, k_train = jax.random.split(key)
    params = jax.tree.map(lambda a: a.astype(data.dtype), model.init(k_init, data.shape[1]))
    result = train(k_train, data, sde, _mlp_network(model), params, steps=steps,
                   batch_size=batch_size, optimizer=optimizer, ema=None, t_min=t_min,
                   t_max=t_max, progress=False)
    return (result.params, result.losses) if return_losses else result.params


def learned_score(sde, model: MLP, params):
    """The score ``-eps_theta(x, t) / sigma_t`` of a trained noise predictor."""
    return from_noise_predictor(sde, functools.partial(model.apply, params))

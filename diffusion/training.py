"""Denoising score matching (Vincent 2011; Song et al. 2021 eq. 7) in the noise-prediction
form of Ho et al. 2020 (eq. 14): minimise E_{t ~ U[t_min, t_max]} E_{x0, e} || eps_theta(alpha_t
x0 + sigma_t e, t) - e ||^2, i.e. the DSM loss with weight lambda(t) = sigma_t^2. The
learned score is -eps_theta / sigma_t (:func:`learned_score`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplers.base import check_positive

from .nets import MLP
from .scores import from_noise_predictor
from .solvers import _check_num_steps, _check_sde, _check_times

__all__ = ["dsm_loss", "train_score", "learned_score"]


def dsm_loss(params, key, batch, sde, model: MLP, t_min, t_max):
    """Monte Carlo DSM loss (eps-prediction) on a (b, d) batch: one t and one e per point."""
    k_t, k_e = jax.random.split(key)
    b = batch.shape[0]
    t = jax.random.uniform(k_t, (b,), batch.dtype, t_min, t_max)
    e = jax.random.normal(k_e, batch.shape, batch.dtype)
    x_t = sde.alpha(t)[:, None] * batch + sde.sigma(t)[:, None] * e
    pred = jax.vmap(model.apply, (None, 0, 0))(params, x_t, t)
    return jnp.mean(jnp.sum((pred - e) ** 2, -1))


def train_score(key, data, sde, *, model: MLP, steps: int = 2000, optimizer=None,
                batch_size: int = 256, t_min=None, t_max=None, return_losses: bool = False):
    """Train ``model`` by DSM on ``data`` (n, d) with ``optimizer`` (optax; default
    ``optax.adam(1e-3)``) for ``steps`` minibatch steps (a jitted ``lax.scan``; batches drawn
    with replacement). Returns ``params`` (and the per-step losses if ``return_losses``)."""
    _check_sde(sde)
    _check_num_steps(steps)
    check_positive("batch_size", batch_size)
    data = jnp.asarray(data)
    if data.ndim != 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (num_points, d), got shape {data.shape}")
    if not jnp.issubdtype(data.dtype, jnp.floating):
        data = data.astype(jnp.zeros(()).dtype)
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a diffusion.nets.MLP (from diffusion.nets.mlp), got {model!r}")
    t_min, t_max = _check_times(sde, t_min, t_max)
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    k_init, k_train = jax.random.split(key)
    params = jax.tree.map(lambda a: a.astype(data.dtype), model.init(k_init, data.shape[1]))
    params, losses = _train(k_train, data, params, sde, model, optimizer, int(steps),
                            int(batch_size), t_min, t_max)
    return (params, losses) if return_losses else params


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _train(key, data, params, sde, model, optimizer, steps, batch_size, t_min, t_max):
    opt_state = optimizer.init(params)
    loss_grad = jax.value_and_grad(dsm_loss)

    def step(carry, k):
        params, opt_state = carry
        k_b, k_l = jax.random.split(k)
        idx = jax.random.randint(k_b, (batch_size,), 0, data.shape[0])
        loss, grads = loss_grad(params, k_l, data[idx], sde, model, t_min, t_max)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(key, steps))
    return params, losses


def learned_score(sde, model: MLP, params):
    """The score ``-eps_theta(x, t) / sigma_t`` of a trained noise predictor."""
    return from_noise_predictor(sde, functools.partial(model.apply, params))

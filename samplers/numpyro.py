"""NumPyro bridge: a model's log-density for our samplers, and our samplers as NumPyro kernels.

``logdensity(model, *args, **kwargs)`` gives the log-density over the model's unconstrained
parameters (a dict pytree), an initial point and the map back to constrained sites;
``kernel(samplers.mala, model=..., step_size=...)`` is a ``numpyro.infer.mcmc.MCMCKernel``
so that ``numpyro.infer.MCMC`` (several chains, progress bar, ``get_samples``,
``az.from_numpyro``) runs our samplers.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import initialize_model
from numpyro.util import is_prng_key

from .adaptation import (
    DualAveragingState, adapted_step_size, dual_averaging_init, dual_averaging_update,
)
from .base import Algorithm, tree_all_finite

__all__ = ["logdensity", "kernel", "SamplersKernel", "KernelState"]


def logdensity(model: Callable, *args, rng_key=None, **kwargs):
    """The log-density of a NumPyro model over its unconstrained parameters.

    Args:
      model: a NumPyro model; ``args``/``kwargs`` are passed to it (observed data included).
      rng_key: key for the initial point (drawn as NumPyro does, uniform in (-2, 2) on the
        unconstrained scale); default ``jax.random.key(0)``.

    Returns:
      ``(logdensity_fn, initial_position, constrain_fn)``: ``logdensity_fn(z)`` is the joint
      log-density (Jacobians included) at the unconstrained dict ``z``; ``constrain_fn(z)``
      returns the constrained sample sites and deterministic sites. Both take a single
      position; ``jax.vmap`` them for (chain, draw) batches.
    """
    info = initialize_model(jax.random.key(0) if rng_key is None else rng_key, model,
                            model_args=args, model_kwargs=kwargs)
    potential_fn = info.potential_fn
    return (lambda z: -potential_fn(z)), info.param_info.z, info.postprocess_fn


class KernelState(NamedTuple):
    """State of :class:`SamplersKernel`. ``z`` is the unconstrained position (NumPyro's
    ``sample_field``); ``potential_energy`` = -log-density, ``accept_prob``, ``step_size``
    and ``diverging`` are collected by default (ArviZ renames them lp, acceptance_rate)."""

    i: jax.Array
    z: Any
    potential_energy: jax.Array
    accept_prob: jax.Array
    step_size: jax.Array
    diverging: jax.Array
    sampler_state: Any
    adapt_state: Optional[DualAveragingState]
    rng_key: jax.Array


class SamplersKernel(MCMCKernel):
    """A ``numpyro.infer.mcmc.MCMCKernel`` running a :mod:`samplers` algorithm.

    During NumPyro's warm-up, samplers with a tunable step size (MALA) adapt it by dual
    averaging (Hoffman & Gelman 2014) towards ``target_accept_prob``; the averaged step size
    is kept afterwards.
    """

    sample_field = "z"
    default_fields = ("z", "potential_energy", "accept_prob", "step_size", "diverging")

    def __init__(self, algorithm: Callable[..., Algorithm], model=None, potential_fn=None, *,
                 adapt_step_size: bool = True, target_accept_prob: float = 0.574, **params):
        if (model is None) == (potential_fn is None):
            raise ValueError("give exactly one of model= (a NumPyro model) or potential_fn= "
                             f"(negative log-density), got model={model!r}, "
                             f"potential_fn={potential_fn!r}")
        if not callable(algorithm):
            raise TypeError(f"algorithm must be a sampler factory such as samplers.mala, got {algorithm!r}")
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob!r}")
        self._factory = algorithm
        self._model = model
        self._potential_fn = potential_fn
        self._params = params
        self._adapt = adapt_step_size
        self._target = target_accept_prob
        self._algorithm: Optional[Algorithm] = None
        self._postprocess = None
        self._num_warmup = 0
        self._sample_fn = None

    @property
    def model(self):
        return self._model

    def _build(self, rng_key, model_args, model_kwargs, init_params):
        if self._model is None:
            if init_params is None:
                raise ValueError("init_params must be given with potential_fn")
            potential_fn = self._potential_fn
        else:
            info = initialize_model(rng_key, self._model, model_args=model_args,
                                    model_kwargs=model_kwargs)
            potential_fn = info.potential_fn
            self._postprocess = info.postprocess_fn
            if init_params is None:
                init_params = info.param_info.z
        self._algorithm = self._factory(lambda z: -potential_fn(z), **self._params)
        return init_params

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        batched = not is_prng_key(rng_key)
        self._num_warmup = num_warmup
        split = jax.vmap(jax.random.split) if batched else jax.random.split
        keys = split(rng_key)
        rng_key, key_init = (keys[:, 0], keys[:, 1]) if batched else (keys[0], keys[1])
        init_params = self._build(key_init, model_args, model_kwargs or {}, init_params)
        init_one = self._init_one
        self._sample_fn = self._sample_one
        if batched:
            init_one = jax.vmap(init_one)
            self._sample_fn = jax.vmap(self._sample_one)
        return init_one(init_params, rng_key)

    def _init_one(self, z, rng_key):
        alg = self._algorithm
        rng_key, key = jax.random.split(rng_key)
        state = alg.init(z, key)
        dtype = jnp.result_type(float)
        h = jnp.asarray(alg.step_size if alg.step_size is not None else jnp.nan, dtype)
        adapt = dual_averaging_init(h) if (self._adapt and alg.kernel is not None) else None
        return KernelState(jnp.zeros((), jnp.int32), state.position,
                           -getattr(state, "logdensity", jnp.nan), jnp.ones((), dtype), h,
                           jnp.zeros((), bool), state, adapt, rng_key)

    def _sample_one(self, state: KernelState) -> KernelState:
        alg = self._algorithm
        rng_key, key = jax.random.split(state.rng_key)
        warm = state.i < self._num_warmup
        adapt = state.adapt_state
        if adapt is not None:
            h = jnp.where(warm, jnp.exp(adapt.log_step), adapted_step_size(adapt))
            new, info = alg.kernel(key, state.sampler_state, None, h)
            updated = dual_averaging_update(adapt, info.acceptance_rate, self._target)
            adapt = jax.tree.map(lambda a, b: jnp.where(warm, a, b), updated, adapt)
        else:
            h = state.step_size
            new, info = alg.step(key, state.sampler_state, None)
        accept = getattr(info, "acceptance_rate", jnp.ones_like(h))
        return KernelState(state.i + 1, new.position, -getattr(new, "logdensity", jnp.nan),
                           accept, h, ~tree_all_finite(new.position), new, adapt, rng_key)

    def sample(self, state, model_args, model_kwargs):
        return self._sample_fn(state)

    def postprocess_fn(self, model_args, model_kwargs):
        if self._postprocess is None:
            return lambda z: z
        return self._postprocess

    def get_diagnostics_str(self, state):
        return f"step size {float(state.step_size):.2e}, acc. prob {float(state.accept_prob):.2f}"


def kernel(algorithm: Callable[..., Algorithm], model=None, potential_fn=None, **params) -> SamplersKernel:
    """``numpyro.infer.MCMC`` kernel running ``algorithm`` (``samplers.mala``, ``samplers.ula``,
    ``samplers.underdamped``, ...) on a NumPyro ``model`` (or a ``potential_fn``).

    ``params`` go to the algorithm (``step_size=...``) except ``adapt_step_size`` (default
    True) and ``target_accept_prob`` (default 0.574, optimal for MALA).
    """
    return SamplersKernel(algorithm, model=model, potential_fn=potential_fn, **params)

"""NumPyro bridge: a model's log-density for our samplers, and our samplers as NumPyro kernels.

``logdensity(model, *args, **kwargs)`` gives the log-density over the model's unconstrained
parameters (a dict pytree), an initial point and the map back to constrained sites;
``kernel(samplers.mala, model=..., step_size=...)`` is a ``numpyro.infer.mcmc.MCMCKernel``
so that ``numpyro.infer.MCMC`` (several chains, progress bar, ``get_samples``,
``az.from_numpyro``) runs our samplers.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from numpyro.handlers import seed
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import initialize_model, potential_energy
from numpyro.util import is_prng_key

from jax.flatten_util import ravel_pytree

from . import adaptation
from .base import Algorithm, tree_all_finite
from .validation import check_bool, check_int

__all__ = ["logdensity", "kernel", "SamplersKernel", "KernelState"]


def logdensity(model: Callable, *args, rng_key=None, num_chains: Optional[int] = None,
               init_strategy: Callable = init_to_uniform, **kwargs):
    """The log-density of a NumPyro model over its unconstrained parameters.

    Args:
      model: a NumPyro model; ``args``/``kwargs`` are passed to it (observed data included).
      rng_key: key for the initial point; default ``jax.random.key(0)``.
      num_chains: if given, one initial point per chain (a leading chain axis: pass
        ``chain_axis=True`` to :func:`samplers.run`), each drawn by ``init_strategy``.
      init_strategy: a NumPyro init strategy (default ``init_to_uniform``: uniform in
        (-2, 2) on the unconstrained scale, as NumPyro's kernels do).

    Returns:
      ``(logdensity_fn, initial_position, constrain_fn)``: ``logdensity_fn(z)`` is the joint
      log-density (Jacobians included) at the unconstrained dict ``z``; ``constrain_fn(z)``
      returns the constrained sample sites and deterministic sites. Both take a single
      position; pass ``constrain_fn`` to ``Trace.to_arviz(constrain_fn=...)`` to export the
      model's own sites.
    """
    key = jax.random.key(0) if rng_key is None else rng_key
    if num_chains is not None:
        num_chains = check_int("num_chains", num_chains)
        key = jax.random.split(key, num_chains)
    info = initialize_model(key, model, init_strategy=init_strategy, model_args=args,
                            model_kwargs=kwargs)
    potential_fn = info.potential_fn
    return (lambda z: -potential_fn(z)), info.param_info.z, info.postprocess_fn


def _takes_grad_estimator(factory: Callable) -> bool:
    """Whether ``factory`` (e.g. ``samplers.sgld``) is built on a gradient estimator
    ``(position, batch) -> grad`` rather than on a log-density: its first parameter is named
    ``grad_estimator`` (a wrapper of ``samplers.sgld`` keeps the name to be recognised)."""
    try:
        first = next(iter(inspect.signature(factory).parameters))
    except (TypeError, ValueError, StopIteration):
        return False
    return first == "grad_estimator"


def _enumerated_sites(model_trace) -> list[str]:
    return [name for name, site in model_trace.items()
            if site["type"] == "sample" and site.get("infer", {}).get("enumerate") == "parallel"]


def _explain_enumeration(model: Callable, sites: list[str]) -> Callable:
    """``model``, whose failure to draw an enumerated site without a key (NumPyro's
    ``log_likelihood``, which ``az.from_numpyro`` calls, substitutes the continuous draws
    only and cannot marginalise ``sites``) becomes an error that names the fix."""

    @functools.wraps(model)
    def wrapped(*args, **kwargs):
        try:
            return model(*args, **kwargs)
        except AssertionError as error:
            raise ValueError(
                f"the model's enumerated discrete site(s) {sites} have no draws: NumPyro's "
                "log_likelihood cannot marginalise them; export with "
                "az.from_numpyro(mcmc, log_likelihood=False)") from error

    return wrapped


class KernelState(NamedTuple):
    """State of :class:`SamplersKernel`. ``z`` is the unconstrained position (NumPyro's
    ``sample_field``); ``potential_energy`` = -log-density, ``accept_prob`` (Metropolis-adjusted
    samplers only), ``step_size`` and ``diverging`` are collected by default (ArviZ renames
    them lp, acceptance_rate)."""

    i: jax.Array
    z: Any
    potential_energy: jax.Array
    accept_prob: jax.Array
    step_size: jax.Array
    diverging: jax.Array
    sampler_state: Any
    adapt_state: Optional[adaptation.WindowState]
    rng_key: jax.Array


def _finite_state(state) -> jax.Array:
    """True when the position, and the log-density where the sampler keeps one, are finite."""
    finite = tree_all_finite(state.position)
    logdensity = getattr(state, "logdensity", None)
    return finite if logdensity is None else finite & jnp.isfinite(logdensity)


class SamplersKernel(MCMCKernel):
    """A ``numpyro.infer.mcmc.MCMCKernel`` running a :mod:`samplers` algorithm.

    * Each chain starts from its own point drawn by ``init_strategy`` (NumPyro's
      ``init_to_uniform`` by default), unless ``init_params`` is given to ``MCMC.run``.
    * A step whose position or log-density is not finite is not taken: the chain keeps its
      last finite state and the step is counted in ``diverging`` (``MCMC.print_summary``
      prints the number of divergences; ``az.summary`` and ``az.plot_trace`` read them).
    * ``accept_prob`` is collected for Metropolis-adjusted samplers (MALA, MALT) only: an
      unadjusted sampler (ULA, SGLD, underdamped) has none to report. A transition whose
      energy error exceeds 1000 or is not finite is rejected and counted in ``diverging``.
    * Warm-up adapts with NumPyro's argument names and Stan's windowed scheme
      (:mod:`samplers.adaptation`), each chain for itself: ``adapt_step_size`` (dual
      averaging towards ``target_accept_prob``: default 0.574 for MALA, 0.8 for MALT),
      ``adapt_mass_matrix`` (the preconditioner from the slow windows' draws, ``dense_mass``
      for a dense one) and, for MALT, the trajectory length and friction. Both default to
      on for the Metropolis-adjusted samplers and off for the unadjusted ones, whose step
      size and preconditioner set their bias (pass ``adapt_step_size=True`` to tune the step
      on the energy error).
    * Samplers built on a gradient estimator (:func:`samplers.sgld`) get the model's
      gradient; where the model subsamples its data with
      ``numpyro.plate(name, N, subsample_size=n)``, each step draws a fresh minibatch and the
      plate scales its log-likelihood by N / n (an unbiased gradient), else the gradient uses
      all the data.
    * Models with enumerated discrete sites (``infer={"enumerate": "parallel"}``) need
      ``funsor`` (``pip install "samplers[enum]"``); NumPyro's pointwise log-likelihood
      cannot marginalise them, so export with ``az.from_numpyro(mcmc, log_likelihood=False)``
      (the same holds for NumPyro's NUTS).
    """

    sample_field = "z"

    def __init__(self, algorithm: Callable[..., Algorithm], model=None, potential_fn=None, *,
                 init_strategy: Callable = init_to_uniform, adapt_step_size: Optional[bool] = None,
                 adapt_mass_matrix: Optional[bool] = None, dense_mass: bool = False,
                 target_accept_prob: Optional[float] = None, **params):
        if (model is None) == (potential_fn is None):
            raise ValueError("give exactly one of model= (a NumPyro model) or potential_fn= "
                             f"(negative log-density), got model={model!r}, "
                             f"potential_fn={potential_fn!r}")
        if not callable(algorithm):
            raise TypeError(f"algorithm must be a sampler factory such as samplers.mala, got {algorithm!r}")
        if not callable(init_strategy):
            raise TypeError(f"init_strategy must be a NumPyro init strategy such as "
                            f"numpyro.infer.init_to_median, got {init_strategy!r}")
        if target_accept_prob is not None and not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob!r}")
        check_bool("dense_mass", dense_mass)
        self._factory = algorithm
        self._model = model
        self._potential_fn = potential_fn
        self._init_strategy = init_strategy
        self._params = params
        self._grad_estimator = _takes_grad_estimator(algorithm)
        self._adjusted, self._has_logdensity, self._info = self._probe()
        tunable = hasattr(self._info, "acceptance_rate") or hasattr(self._info, "energy_error")
        if adapt_step_size is None:
            adapt_step_size = self._adjusted
        if adapt_mass_matrix is None:
            adapt_mass_matrix = self._adjusted
        if adapt_step_size and not tunable:
            raise ValueError(f"adapt_step_size=True needs a sampler with a tunable step size "
                             f"(mala, malt, ula, underdamped), got {getattr(algorithm, '__name__', algorithm)}")
        if adapt_mass_matrix and not self._preconditioned:
            raise ValueError("adapt_mass_matrix=True needs a sampler with a preconditioner "
                             f"(mala, malt, ula, underdamped), got {getattr(algorithm, '__name__', algorithm)}")
        if target_accept_prob is not None and not self._adjusted:
            raise ValueError("target_accept_prob applies to Metropolis-adjusted samplers "
                             "(mala, malt); unadjusted ones are tuned on their energy error")
        self._adapt_step = bool(adapt_step_size)
        self._adapt_mass = bool(adapt_mass_matrix)
        self._dense = dense_mass
        self._target = target_accept_prob
        self._algorithm: Optional[Algorithm] = None
        self._enumerated: list[str] = []
        self._postprocess = None
        self._num_warmup = 0
        self._sample_fn = None

    @property
    def model(self):
        if self._enumerated:
            return _explain_enumeration(self._model, self._enumerated)
        return self._model

    @property
    def default_fields(self):
        energy = ("potential_energy",) if self._has_logdensity else ()
        accept = ("accept_prob",) if self._adjusted else ()
        return ("z",) + energy + accept + ("step_size", "diverging")

    def _probe(self):
        """Build the algorithm on a 1-d Gaussian (shapes only) to learn whether its step
        reports an acceptance probability, its state a log-density (SGLD's does not) and
        what it can adapt; this also validates ``params`` when the kernel is made."""
        target = ((lambda x, batch: -x) if self._grad_estimator
                  else (lambda x: -0.5 * jnp.sum(x ** 2)))
        alg = self._factory(target, **self._params)
        self._preconditioned = "inverse_mass_matrix" in getattr(alg.params, "_fields", ())

        def one_step(key):
            return alg.step(key, alg.init(jnp.zeros(1), key), None)

        state, info = jax.eval_shape(one_step, jax.random.key(0))
        if getattr(alg.params, "step_size", None) is None:
            info = None  # a schedule: nothing to tune
        return ("acceptance_rate" in getattr(info, "_fields", ()),
                getattr(state, "logdensity", None) is not None, info)

    def _build(self, rng_key, model_args, model_kwargs, init_params):
        if self._model is None:
            if init_params is None:
                raise ValueError("init_params must be given with potential_fn")
            potential_fn = self._potential_fn
            target = lambda z: -potential_fn(z)  # noqa: E731
            if self._grad_estimator:
                grad = jax.grad(target)
                target = lambda z, batch: grad(z)  # noqa: E731
        else:
            info = initialize_model(rng_key, self._model, init_strategy=self._init_strategy,
                                    model_args=model_args, model_kwargs=model_kwargs)
            self._postprocess = info.postprocess_fn
            self._enumerated = _enumerated_sites(info.model_trace)
            if init_params is None:
                init_params = info.param_info.z
            potential_fn = info.potential_fn
            target = lambda z: -potential_fn(z)  # noqa: E731
            if self._grad_estimator:
                target = self._model_gradient(model_args, model_kwargs)
        self._algorithm = self._factory(target, **self._params)
        return init_params

    def _model_gradient(self, model_args, model_kwargs):
        """``(z, key) -> grad log p(z)`` where ``key`` draws the subsample of every
        ``numpyro.plate(..., subsample_size=n)`` (the full data when there is none)."""
        enum = bool(self._enumerated)

        def logdensity_fn(z, key):
            return -potential_energy(seed(self._model, key), model_args, model_kwargs, z,
                                     enum=enum)

        return jax.grad(logdensity_fn)

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        batched = not is_prng_key(rng_key)
        self._num_warmup = num_warmup
        slow, end = adaptation.window_schedule(num_warmup)
        self._schedule = (jnp.asarray(slow if num_warmup else [False]),
                          jnp.asarray(end if num_warmup else [False]))
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
        window = None
        if self._adapt_step or self._adapt_mass:
            dim = ravel_pytree(state.position)[0].shape[0]
            window = adaptation.window_init(alg.params, dim, adapt_mass_matrix=self._adapt_mass,
                                            dense_mass=self._dense)
        return KernelState(jnp.zeros((), jnp.int32), state.position,
                           -getattr(state, "logdensity", jnp.nan), jnp.ones((), dtype), h,
                           jnp.zeros((), bool), state, window, rng_key)

    def _sample_one(self, state: KernelState) -> KernelState:
        alg = self._algorithm
        rng_key, key, key_batch = jax.random.split(state.rng_key, 3)
        batch = key_batch if self._grad_estimator else None
        window = state.adapt_state
        if window is not None:
            warm = state.i < self._num_warmup
            final = adaptation.window_final(window, self._adapt_step)
            params = jax.tree.map(lambda a, b: jnp.where(warm, a, b), window.params, final)
            new, info = alg.kernel(key, state.sampler_state, batch, params)
        else:
            new, info = alg.step(key, state.sampler_state, batch)
            params = alg.params
        h = jnp.asarray(getattr(params, "step_size", None) if alg.step_size is not None
                        else jnp.nan, state.step_size.dtype)
        finite = _finite_state(new)
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state.sampler_state)
        accept = jnp.asarray(getattr(info, "acceptance_rate", jnp.nan), h.dtype)
        accept = jnp.where(finite, accept, 0.0)
        diverging = ~finite | getattr(info, "diverging", False)
        if window is not None:
            flat = ravel_pytree(new.position)[0]
            statistic = adaptation.tuning_statistic(info, flat.shape[0])
            statistic = jnp.where(finite, statistic, 0.0)
            slow, end = self._schedule
            t = jnp.minimum(state.i, max(self._num_warmup - 1, 0))
            target = (self._target if self._target is not None
                      else adaptation.default_target(alg.name, info))
            updated = adaptation.window_update(
                window, slow[t], end[t], flat, statistic, target=target,
                adapt_step_size=self._adapt_step, adapt_mass_matrix=self._adapt_mass,
                dense_mass=self._dense)
            window = jax.tree.map(lambda a, b: jnp.where(warm, a, b), updated, window)
        h = jnp.asarray(getattr(info, "step_size", h), h.dtype)  # SGLD: its schedule's h_k
        return KernelState(state.i + 1, new.position, -getattr(new, "logdensity", jnp.nan),
                           accept, h, diverging, new, window, rng_key)

    def sample(self, state, model_args, model_kwargs):
        return self._sample_fn(state)

    def postprocess_fn(self, model_args, model_kwargs):
        if self._postprocess is None:
            return lambda z: z
        return self._postprocess

    def get_diagnostics_str(self, state):
        text = f"step size {float(state.step_size):.2e}"
        if self._adjusted:
            text += f", acc. prob {float(state.accept_prob):.2f}"
        return text


def kernel(algorithm: Callable[..., Algorithm], model=None, potential_fn=None, **params) -> SamplersKernel:
    """``numpyro.infer.MCMC`` kernel running ``algorithm`` (``samplers.malt``, ``samplers.mala``, ``samplers.ula``,
    ``samplers.underdamped``, ``samplers.sgld``) on a NumPyro ``model`` (or a
    ``potential_fn``); see :class:`SamplersKernel` for what it collects and how it treats
    divergences and minibatches.

    ``params`` go to the algorithm (``step_size=...``) except NumPyro's kernel arguments
    ``init_strategy`` (default ``init_to_uniform``), ``adapt_step_size`` and
    ``adapt_mass_matrix`` (default: on for MALA and MALT, off for the unadjusted samplers),
    ``dense_mass`` (default False) and ``target_accept_prob`` (default 0.574 for MALA, 0.8
    for MALT).
    """
    return SamplersKernel(algorithm, model=model, potential_fn=potential_fn, **params)

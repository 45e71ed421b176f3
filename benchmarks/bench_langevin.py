"""Step throughput of ULA, MALA and SGLD: ``samplers`` against BlackJAX; cost of ``samplers.run``.

Both sides are driven identically: one jitted ``lax.scan`` over steps, ``vmap`` over chains,
the key of step t of chain c is ``fold_in(key_c, t)``, the same target, initial states,
step size and number of steps. Only the transition differs:

* ULA: ``samplers.ula(...).step`` vs BlackJAX's Euler solver
  ``blackjax.mcmc.diffusions.overdamped_langevin`` (BlackJAX has no top-level ULA);
* MALA: ``samplers.mala(...).step`` vs ``blackjax.mala(...).step``;
* SGLD: ``samplers.sgld(samplers.minibatch_gradient(...))`` vs
  ``blackjax.sgld(blackjax.sgmcmc.gradients.grad_estimator(...))``, each library's own
  minibatch gradient estimator, on one minibatch (drawn with replacement, by the same code)
  per step and chain.

ULA and MALA target the AR(1) Gaussian (correlated, unit marginal variances, O(d) density);
SGLD targets a Bayesian linear regression posterior (``samplers.targets``).

``samplers.run`` is measured against a bare ``lax.scan`` over our own MALA kernel that does
the same work (initialise, step every chain, keep every position), so its ratio
(bare / run, < 1 means run is slower) is the price of the driver's bookkeeping (non-finite
checks, per-draw statistics, host-side validation).

``python -m benchmarks.bench_langevin [--quick] [--out DIR]``.
"""
from __future__ import annotations

import sys
from typing import Callable, Iterator

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

import samplers
import samplers.targets

from .harness import Case, main

NAME = "langevin"
TITLE = "Langevin samplers: samplers vs BlackJAX (step throughput)"
PEERS = ("blackjax",)
NOTES = """
One jitted `lax.scan` over steps with `vmap` over chains drives both libraries; same target,
initial states, step size and number of steps. ULA/MALA: AR(1) Gaussian (rho = 0.5), step size
0.3 d^(-1/3). SGLD: Bayesian linear regression (N data, batch n, drawn with replacement),
step size 0.1 / lambda_max(posterior precision), each library's own gradient estimator.
`run` rows: `samplers.run` against a bare `lax.scan` over our MALA kernel that keeps every
draw (peer/ours < 1: the driver costs that much extra); with `progress=True` the bar is
updated by about 20 host callbacks per run, a fixed cost of a few ms that only short runs see. The check column compares a
statistic of both runs (mean acceptance rate, or mean of x_i^2 over coordinates, steps and chains).
"""

RHO = 0.5
NUM_DATA = 10_000
BATCH_SIZE = 100


def config(quick: bool) -> dict:
    """Sizes and timing settings. ``quick`` (about two minutes on two CPU cores, most of it
    XLA compilation) keeps the smallest and largest dimension."""
    return {
        "dims": [10, 1000] if quick else [10, 100, 1000],
        "chains": [1, 16],
        "num_steps": 300 if quick else 1000,
        "repeats": 3 if quick else 7,
        "min_time": 0.02 if quick else 0.1,
        "run_dims": [10, 100, 1000],
    }


# ------------------------------------------------------------------------------ targets

def ar1_logdensity(rho: float = RHO) -> Callable:
    """log N(x; 0, C) up to a constant, C_ij = rho^|i - j| (a stationary AR(1) process).

    x_0 ~ N(0, 1), x_i = rho x_{i-1} + sqrt(1 - rho^2) e_i, so the density factorises into
    O(d) terms; the precision's eigenvalues lie in ((1 - rho)/(1 + rho), (1 + rho)/(1 - rho)).
    """

    def logdensity_fn(x):
        innovations = x[1:] - rho * x[:-1]
        return -0.5 * (x[0] ** 2 + jnp.sum(innovations**2) / (1.0 - rho**2))

    return logdensity_fn


def ar1_sample(key, num: int, dim: int, rho: float = RHO) -> jax.Array:
    """``num`` exact draws (num, dim) from the AR(1) Gaussian of :func:`ar1_logdensity`."""
    lags = np.abs(np.subtract.outer(np.arange(dim), np.arange(dim)))
    chol = np.linalg.cholesky(rho ** lags)
    return jax.random.normal(key, (num, dim)) @ jnp.asarray(chol.T, jnp.float32)


def draw_batch(key, data, batch_size: int = BATCH_SIZE):
    """``batch_size`` data drawn uniformly with replacement (the same code for both sides)."""
    size = jax.tree.leaves(data)[0].shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, size)
    return jax.tree.map(lambda x: x[idx], data)


# ------------------------------------------------------------------------------ drivers

def scan_driver(step: Callable, num_steps: int) -> Callable:
    """``jit(drive)(key, states, data) -> (states, mean statistic per chain)``.

    ``step(key, state, data) -> (state, scalar)`` is one chain's transition; ``drive`` runs
    ``num_steps`` of ``vmap(step)`` over the leading chain axis of ``states`` in a ``lax.scan``,
    chain c at step t using ``fold_in(split(key)[c], t)``, and averages the scalar over steps.
    """

    def drive(key, states, data):
        num_chains = jax.tree.leaves(states)[0].shape[0]
        chain_keys = jax.random.split(key, num_chains)
        stepper = jax.vmap(step, in_axes=(0, 0, None))

        def body(carry, t):
            states, total = carry
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(chain_keys, t)
            states, stat = stepper(keys, states, data)
            return (states, total + stat), None

        init = (states, jnp.zeros((num_chains,)))
        (states, total), _ = jax.lax.scan(body, init, jnp.arange(num_steps))
        return states, total / num_steps

    return jax.jit(drive)


def _mean_sq(position) -> jax.Array:
    return jnp.mean(position**2)


def _stat_check(name: str) -> Callable:
    """The check of a case: the mean over chains of each side's per-chain statistic."""
    return lambda ours, peer: {name: (jnp.mean(ours[1]), jnp.mean(peer[1]))}


def _case(method, params, ours_step, peer_step, ours_states, peer_states, data, stat, key):
    """A :class:`Case` driving both transitions with :func:`scan_driver`."""
    num_steps = params["steps"]
    ours, peer = scan_driver(ours_step, num_steps), scan_driver(peer_step, num_steps)
    return Case(method, params, lambda: ours(key, ours_states, data),
                lambda: peer(key, peer_states, data), "blackjax", _stat_check(stat))


# -------------------------------------------------------------------------------- cases

def langevin_cases(dim: int, num_chains: int, num_steps: int, key) -> list[Case]:
    """ULA and MALA on the AR(1) Gaussian in dimension ``dim``."""
    logdensity_fn = ar1_logdensity()
    step_size = 0.3 * dim ** (-1 / 3)
    x0 = ar1_sample(jax.random.fold_in(key, 1), num_chains, dim)
    params = {"d": dim, "chains": num_chains, "steps": num_steps}

    ula = samplers.ula(logdensity_fn, step_size)
    euler = blackjax.mcmc.diffusions.overdamped_langevin(jax.value_and_grad(logdensity_fn))

    def ours_ula(k, state, data):
        state, _ = ula.step(k, state)
        return state, _mean_sq(state.position)

    def peer_ula(k, state, data):
        state = euler(k, state, step_size)
        return state, _mean_sq(state.position)

    mala = samplers.mala(logdensity_fn, step_size)
    bj_mala = blackjax.mala(logdensity_fn, step_size)

    def ours_mala(k, state, data):
        state, info = mala.step(k, state)
        return state, info.acceptance_rate

    def peer_mala(k, state, data):
        state, info = bj_mala.step(k, state)
        return state, info.acceptance_rate

    ours_states = jax.vmap(ula.init)(x0)
    mala_states = jax.vmap(bj_mala.init)(x0)
    euler_states = blackjax.mcmc.diffusions.DiffusionState(*mala_states)
    return [
        _case("ula", params, ours_ula, peer_ula, ours_states, euler_states, None, "mean x²", key),
        _case("mala", params, ours_mala, peer_mala, ours_states, mala_states, None, "acc", key),
    ]


def sgld_case(dim: int, num_chains: int, num_steps: int, key) -> Case:
    """SGLD on a Bayesian linear regression posterior with ``NUM_DATA`` data in ``dim``."""
    target = samplers.targets.make_linear_regression(jax.random.fold_in(key, 2), NUM_DATA, dim)
    step_size = 0.1 * float(np.linalg.eigvalsh(np.asarray(target.cov, np.float64))[0])
    x0 = target.sample(jax.random.fold_in(key, 3), num_chains)
    params = {"d": dim, "chains": num_chains, "steps": num_steps, "N": NUM_DATA, "n": BATCH_SIZE}

    sgld = samplers.sgld(
        samplers.minibatch_gradient(target.logprior_fn, target.loglik_fn, NUM_DATA), step_size)
    bj_sgld = blackjax.sgld(
        blackjax.sgmcmc.gradients.grad_estimator(target.logprior_fn, target.loglik_fn, NUM_DATA))

    def ours(k, state, data):
        key_step, key_batch = jax.random.split(k)
        state, _ = sgld.step(key_step, state, draw_batch(key_batch, data))
        return state, _mean_sq(state.position)

    def peer(k, position, data):
        key_step, key_batch = jax.random.split(k)
        position = bj_sgld.step(key_step, position, draw_batch(key_batch, data), step_size)
        return position, _mean_sq(position)

    return _case("sgld", params, ours, peer, jax.vmap(sgld.init)(x0), x0, target.data,
                 "mean x²", key)


def run_overhead_case(dim: int, num_chains: int, num_steps: int, key,
                      progress: bool = False) -> Case:
    """``samplers.run`` against a bare jitted ``lax.scan`` over our MALA kernel.

    Both initialise the chains from the same point, take ``num_steps`` steps and return
    every position, (chain, draw, d). With ``progress``, ``run`` also updates a progress
    bar (written to stderr) from inside the compiled loop.
    """
    step_size = 0.3 * dim ** (-1 / 3)
    alg = samplers.mala(ar1_logdensity(), step_size)
    x0 = jnp.zeros((dim,))

    @jax.jit
    def bare(key):
        chain_keys = jax.random.split(key, num_chains)
        states = jax.vmap(alg.init)(jnp.broadcast_to(x0, (num_chains, dim)))

        def body(states, t):
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(chain_keys, t)
            states, _ = jax.vmap(alg.step)(keys, states)
            return states, states.position

        _, positions = jax.lax.scan(body, states, jnp.arange(num_steps))
        return jnp.swapaxes(positions, 0, 1)

    def ours():
        return samplers.run(key, alg, x0, num_steps, num_chains=num_chains,
                            progress=progress).positions

    def check(ours_out, peer_out):
        return {"mean x²": (_mean_sq(ours_out), _mean_sq(peer_out))}

    params = {"d": dim, "chains": num_chains, "steps": num_steps}
    method = "run(mala, progress=True)" if progress else "run(mala)"
    return Case(method, params, ours, lambda: bare(key), "bare lax.scan", check)


def cases(cfg: dict) -> Iterator[Case]:
    """Every case of the benchmark, built lazily (one target in memory at a time)."""
    key = jax.random.key(0)
    for dim in cfg["dims"]:
        for num_chains in cfg["chains"]:
            yield from langevin_cases(dim, num_chains, cfg["num_steps"], key)
            yield sgld_case(dim, num_chains, cfg["num_steps"], key)
    for dim in cfg["run_dims"]:
        for num_chains in cfg["chains"]:
            yield run_overhead_case(dim, num_chains, cfg["num_steps"], key)
    for num_chains in cfg["chains"]:
        yield run_overhead_case(cfg["run_dims"][0], num_chains, cfg["num_steps"], key,
                                progress=True)


if __name__ == "__main__":
    sys.exit(main({NAME: __name__}))

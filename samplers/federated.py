"""Federated averaging Langevin dynamics (FA-LD), on one device or sharded across many.

[Deng2024], "On Convergence of Federated Averaging Langevin Dynamics",
Algorithms 1 and 4. The posterior is
pi(x) ∝ exp(-f(x) / tau), f = sum_c f_c split over N clients with weights p_c (sum 1).
Client c works on its scaled potential f^c = f_c / p_c (so sum_c p_c grad f^c = grad f); with
data, f_c is its negative log-likelihood and the prior enters every f^c once
(f^c = -loglik_c / p_c - log prior). Each round, every client starts from the server's x and
takes K local steps (paper, eq. 3)

    x_c <- x_c + eta grad log p^c(x_c) + sqrt(2 eta tau) (rho xi + sqrt((1 - rho^2) / p_c) xi_c),

xi shared by all clients, xi_c its own (rho = 0: "independent" noise, rho = 1: "correlated");
then the server averages: x = sum_c w_c x_c with w_c = p_c (full participation), or over S
reporting clients (Algorithm 4): scheme I draws them with replacement with probabilities p_c
and averages uniformly (a duplicate counts twice), scheme II draws them uniformly without
replacement (balanced p_c = 1/N only). One draw per round = the synchronised x.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .base import Algorithm, PyTree, StepSize, tree_first_axis, tree_normal
from .validation import (ScalarOrSchedule, check_int, check_mesh, check_positive, check_shape,
                         check_step_size)

__all__ = ["fald", "sharded", "scheme_i", "scheme_ii", "FALDState", "FALDInfo", "Participation"]


class FALDState(NamedTuple):
    """The server's position and the number of communication rounds done."""

    position: PyTree
    count: jax.Array


class FALDInfo(NamedTuple):
    """Per round: the step size used, the number of client reports aggregated, and the bytes
    exchanged (each report uploads a position and downloads the new one)."""

    step_size: jax.Array
    reports: jax.Array
    bytes_exchanged: jax.Array


class Participation(NamedTuple):
    """Partial device participation: ``scheme`` "i" or "ii", ``num_reporting`` = S."""

    scheme: str
    num_reporting: int


def scheme_i(num_reporting: int) -> Participation:
    """S clients drawn with replacement with probabilities p_c, averaged uniformly (paper,
    Algorithm 4, scheme I). Leaves a bias that does not vanish as eta -> 0 (Theorem 4.10)."""
    return Participation("i", check_int("num_reporting", num_reporting))


def scheme_ii(num_reporting: int) -> Participation:
    """S clients drawn uniformly without replacement, averaged uniformly; needs balanced
    weights p_c = 1/N (paper, Algorithm 4, scheme II)."""
    return Participation("ii", check_int("num_reporting", num_reporting))


class _Spec(NamedTuple):
    """What one round needs. ``client_grad(x, data_c, size_c, p_c, key)`` is grad log p^c."""

    client_grad: Callable
    data: PyTree  # leading client axis
    sizes: jax.Array  # (N,) data points per client (ones for log-density clients)
    weights: jax.Array  # (N,) p_c
    local_steps: int
    schedule: Callable
    rho: float
    temperature: float
    participation: Optional[Participation]


# ------------------------------------------------------------------------- clients

def _grad_from_data(loglik_fn, logprior_fn, batch_size):
    grad_prior = jax.grad(logprior_fn)
    # the gradient of the weighted sum of log-likelihoods (no per-datum gradient array)
    grad_lik = jax.grad(lambda x, batch, weight: weight @ jax.vmap(loglik_fn, (None, 0))(x, batch))

    def client_grad(x, data_c, size_c, p_c, key):
        n_max = tree_first_axis(data_c)
        valid = jnp.arange(n_max) < size_c
        if batch_size is None:  # all the client's points (padding masked out), no copy
            batch, weight = data_c, valid / p_c
        else:  # a uniform batch among the client's own size_c points (top-k of uniforms)
            u = jnp.where(valid, jax.random.uniform(key, (n_max,)), -1.0)
            idx = jax.lax.top_k(u, batch_size)[1]
            batch = jax.tree.map(lambda d: d[idx], data_c)
            weight = jnp.full(batch_size, size_c / (batch_size * p_c))
        lik = grad_lik(x, batch, weight.astype(jnp.result_type(float)))
        return jax.tree.map(jnp.add, grad_prior(x), lik)

    return client_grad


def _grad_from_logdensities(logdensities: Sequence[Callable]):
    grads = [jax.grad(fn) for fn in logdensities]

    def client_grad(x, index, size_c, p_c, key):
        del size_c, key
        g = jax.lax.switch(index, grads, x)
        return jax.tree.map(lambda gi: gi / p_c, g)

    return client_grad


# --------------------------------------------------------------------------- a round

def _participation_weights(key, spec: _Spec) -> jax.Array:
    """w_c of the server average: p_c, or multiplicity / S under partial participation."""
    num_clients = spec.weights.shape[0]
    if spec.participation is None:
        return spec.weights
    s = spec.participation.num_reporting
    if spec.participation.scheme == "i":
        idx = jax.random.choice(key, num_clients, (s,), replace=True, p=spec.weights)
    else:
        idx = jax.random.choice(key, num_clients, (s,), replace=False)
    return jnp.zeros(num_clients, spec.weights.dtype).at[idx].add(1.0 / s)


def _stacked_normal(key, tree, num):
    """``num`` standard normal draws shaped like ``tree``, stacked on a leading axis."""
    return tree_normal(key, jax.tree.map(lambda leaf: jnp.zeros((num,) + jnp.shape(leaf), leaf.dtype), tree))


def _client_round(spec: _Spec, x, eta, shared_key, data_c, size_c, p_c, key_c):
    """K local steps of one client from the server's x (paper, Algorithm 1, lines 4-6).
    The round's noise is drawn in one call per client (and one shared draw)."""
    sd_shared = jnp.sqrt(2.0 * eta * spec.temperature) * spec.rho
    sd_own = jnp.sqrt(2.0 * eta * spec.temperature * (1.0 - spec.rho ** 2) / p_c)
    key_noise, key_batch = jax.random.split(key_c)
    none = jax.tree.map(lambda leaf: jnp.zeros((spec.local_steps, 0)), x)  # an unused noise
    noise = (_stacked_normal(shared_key, x, spec.local_steps) if spec.rho > 0 else none,
             _stacked_normal(key_noise, x, spec.local_steps) if spec.rho < 1 else none,
             jax.random.split(key_batch, spec.local_steps))

    def local_step(x, inputs):
        xi, xi_c, key = inputs
        g = spec.client_grad(x, data_c, size_c, p_c, key)
        x = jax.tree.map(lambda u, gu: u + eta * gu, x, g)
        if spec.rho > 0:  # the shared noise (none for independent noise)
            x = jax.tree.map(lambda u, a: u + sd_shared * a, x, xi)
        if spec.rho < 1:  # the client's own noise (none for correlated noise)
            x = jax.tree.map(lambda u, b: u + sd_own * b, x, xi_c)
        return x, None

    x, _ = jax.lax.scan(local_step, x, noise)
    return x


def _weighted_client_sum(spec, x, eta, shared_key, data, sizes, weights, w, keys):
    """sum_c w_c x_c over the clients given (all of them, or one device's share)."""
    run_client = lambda d, n, p, k: _client_round(spec, x, eta, shared_key, d, n, p, k)  # noqa: E731
    finals = jax.vmap(run_client)(data, sizes, weights, keys)
    return jax.tree.map(lambda b: jnp.tensordot(w.astype(b.dtype), b, 1), finals)


class _Round:
    """One communication round; with ``mesh``, the clients are split over the mesh's first
    axis with ``shard_map`` and the server average is one ``psum`` (all-reduce)."""

    def __init__(self, spec: _Spec, mesh: Optional[Mesh] = None):
        self.spec, self.mesh = spec, mesh

    def __call__(self, key, state: FALDState, batch=None):
        del batch
        spec = self.spec
        eta = jnp.asarray(spec.schedule(state.count), jnp.result_type(float))
        key_select, shared_key, key_clients = jax.random.split(key, 3)
        num_clients = spec.weights.shape[0]
        w = _participation_weights(key_select, spec)
        keys = jax.vmap(lambda c: jax.random.fold_in(key_clients, c))(jnp.arange(num_clients))
        args = (spec.data, spec.sizes, spec.weights, w, keys)
        if self.mesh is None:
            position = _weighted_client_sum(spec, state.position, eta, shared_key, *args)
        else:
            axis = self.mesh.axis_names[0]

            def on_device(x, eta, shared_key, *local):
                partial = _weighted_client_sum(spec, x, eta, shared_key, *local)
                return jax.lax.psum(partial, axis)

            sharded_args = PartitionSpec(axis)
            # place the client axis on the mesh (needed under explicit-sharding meshes)
            args = jax.tree.map(lambda a: jax.reshard(a, NamedSharding(self.mesh, sharded_args)), args)
            position = jax.shard_map(
                on_device, mesh=self.mesh,
                in_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec()) + (sharded_args,) * 5,
                out_specs=PartitionSpec(), check_vma=False,
            )(state.position, eta, shared_key, *args)
        reports = jnp.sum(w > 0)  # distinct reporting clients (a duplicate reports once)
        size = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state.position))
        info = FALDInfo(eta, reports, 2 * size * reports)
        return FALDState(position, state.count + 1), info


def _init(position, key=None) -> FALDState:
    del key
    return FALDState(position, jnp.zeros((), jnp.int32))


# ------------------------------------------------------------------------ public API

def _noise_correlation(noise) -> float:
    if noise == "independent":
        return 0.0
    if noise == "correlated":
        return 1.0
    expected = ("noise must be 'independent', 'correlated' or a correlation rho in [0, 1], "
                f"got {noise!r}")
    if isinstance(noise, bool) or not isinstance(noise, (str, int, float, np.integer, np.floating)):
        raise TypeError(expected)
    if not isinstance(noise, str) and 0.0 <= noise <= 1.0:
        return float(noise)
    raise ValueError(expected)


def _client_weights(weights, sizes, num_clients):
    if weights is None:
        return sizes / sizes.sum()
    p = np.asarray(weights, dtype=np.float64)
    check_shape("weights", p, (num_clients,))
    if np.any(~np.isfinite(p)) or np.any(p <= 0) or abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"weights must be positive and sum to 1, got {p.tolist()} (sum {p.sum():.6g})")
    return p


def fald(
    clients: Union[PyTree, Sequence[Callable]],
    local_steps: int,
    step_size: ScalarOrSchedule,
    noise: Union[str, float] = "independent",
    weights=None,
    participation: Optional[Participation] = None,
    batch_size: Optional[int] = None,
    temperature: float = 1.0,
    *,
    loglik_fn: Optional[Callable] = None,
    logprior_fn: Optional[Callable] = None,
    client_sizes=None,
) -> Algorithm:
    """Federated averaging Langevin dynamics [Deng2024, Algorithms 1, 4].

    Args:
      clients: either per-client data, a pytree whose leaves have leading axes
        (num_clients, n_max, ...) (pad unequal clients and give ``client_sizes``), used with
        ``loglik_fn(position, datum)`` and ``logprior_fn(position)``; or a list of per-client
        log-densities ``[log p_1, ..., log p_N]`` with sum_c log p_c = log posterior.
      local_steps: K >= 1 local steps per communication round.
      step_size: eta > 0, or a schedule ``round -> eta_r`` (e.g. the paper's Theorem 4.8
        decay eta_r = 1 / (2 L + m r K / 12)).
      noise: "independent" (rho = 0), "correlated" (rho = 1) or rho in [0, 1] (Theorem 4.9).
      weights: p_c, positive, summing to 1; default the clients' shares of the data (equal
        shares for log-density clients).
      participation: None (all clients report), ``scheme_i(S)`` or ``scheme_ii(S)``.
      batch_size: per-client minibatch for stochastic gradients (data clients only); None
        uses each client's full data.
      temperature: tau; samples exp(log posterior / tau).
      client_sizes: number of real data points per client when the data are padded.

    Returns:
      An :class:`~samplers.Algorithm` whose step is one communication round; use it with
      :func:`samplers.run` (one draw per round) or shard it with :func:`sharded`.
    """
    local_steps = check_int("local_steps", local_steps)
    check_step_size("step_size", step_size)
    check_positive("temperature", temperature)
    rho = _noise_correlation(noise)
    if isinstance(clients, (list, tuple)) and clients and all(callable(c) for c in clients):
        if loglik_fn is not None or logprior_fn is not None or batch_size is not None:
            raise ValueError("loglik_fn, logprior_fn and batch_size apply to data clients, not "
                             "to a list of client log-densities")
        num_clients = len(clients)
        data, sizes = jnp.arange(num_clients), np.ones(num_clients)
        client_grad = _grad_from_logdensities(list(clients))
    else:
        if loglik_fn is None or logprior_fn is None:
            raise ValueError("data clients need loglik_fn(position, datum) and logprior_fn(position); "
                             "or pass clients as a list of per-client log-densities")
        data = jax.tree.map(jnp.asarray, clients)
        shapes = [leaf.shape for leaf in jax.tree.leaves(data)]
        if not shapes or any(len(s) < 2 for s in shapes) or len({s[:2] for s in shapes}) != 1:
            raise ValueError("clients data leaves must share leading axes (num_clients, n_max), "
                             f"got shapes {shapes}")
        num_clients, n_max = shapes[0][:2]
        sizes = (np.full(num_clients, n_max, np.float64) if client_sizes is None
                 else np.asarray(client_sizes, np.float64))
        if sizes.shape != (num_clients,) or np.any(sizes < 1) or np.any(sizes > n_max):
            raise ValueError(f"client_sizes must be {num_clients} integers in [1, {n_max}], "
                             f"got {client_sizes!r}")
        if batch_size is not None:
            batch_size = check_int("batch_size", batch_size)
            if batch_size > sizes.min():
                raise ValueError(f"batch_size must be <= the smallest client's size "
                                 f"{int(sizes.min())}, got {batch_size}")
        client_grad = _grad_from_data(loglik_fn, logprior_fn, batch_size)
    p = _client_weights(weights, sizes, num_clients)
    if participation is not None:
        if not isinstance(participation, Participation):
            raise TypeError("participation must be None, samplers.federated.scheme_i(S) or "
                            f"scheme_ii(S), got {participation!r}")
        if participation.scheme == "ii":
            if participation.num_reporting > num_clients:
                raise ValueError(f"scheme_ii needs S <= num_clients={num_clients}, "
                                 f"got S={participation.num_reporting}")
            if not np.allclose(p, 1.0 / num_clients, rtol=1e-6):
                raise ValueError("scheme_ii needs balanced weights p_c = 1/N (re-weighting "
                                 "unbalanced clients makes the total weight random and the "
                                 f"chain's variance diverge as eta -> 0); got weights {p.tolist()}")
    dtype = jnp.result_type(float)
    schedule = step_size if callable(step_size) else (lambda count: step_size)
    spec = _Spec(client_grad, data, jnp.asarray(sizes, dtype), jnp.asarray(p, dtype),
                 local_steps, schedule, rho, float(temperature), participation)
    h = None if callable(step_size) else float(step_size)
    return Algorithm(_init, _Round(spec), params=None if h is None else StepSize(h), name="fald")


def sharded(fed: Algorithm, mesh: Mesh) -> Algorithm:
    """The same FA-LD with its clients split over the devices of ``mesh`` (first axis).

    Each device runs its clients' local steps; the server average is one ``psum`` per
    round. The number of clients must be a multiple of the axis size. Given the same key,
    the draws equal the single-device run's up to float round-off (the order of the sum).
    A mesh spanning several hosts (after ``jax.distributed.initialize``) uses the same code
    (tested with two processes on one machine and gloo CPU collectives); each host then holds
    every client's data.
    Under partial participation every client runs its local steps and the non-reporting
    ones get weight 0 (N/S times the needed compute, the same law).
    """
    if not isinstance(getattr(fed, "step", None), _Round):
        raise TypeError(f"fed must be an algorithm made by samplers.fald, got {fed!r}")
    spec = fed.step.spec
    check_mesh(mesh, spec.weights.shape[0], "the number of clients")
    return fed._replace(step=_Round(spec, mesh), name="fald_sharded")

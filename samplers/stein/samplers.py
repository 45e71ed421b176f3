"""SVGD, mirrored SVGD, Stein variational mirror descent and natural gradient, as Algorithms.

Method: [Shi2022], "Sampling with Mirrored Stein Operators" (cited below as "paper");
SVGD: [Liu2016]. n particles theta_1..theta_n move in
the dual space eta = grad psi(theta) of a mirror map psi (:mod:`samplers.stein.mirror`):

    eta_i <- eta_i + eps_t g(theta_i),     theta_i = grad psi*(eta_i)            (paper, eq. 8)

with g the steepest-descent direction of KL in the RKHS of a (matrix) kernel K:

    g(theta) = (1/n) sum_j [ K(theta, theta_j) s_H(theta_j) + div_{theta_j} K(theta, theta_j) hess psi(theta_j)^{-1} ],
    s_H = hess psi^{-1} grad log p + div(hess psi^{-1})   (the dual score; paper, eq. 6).

* :func:`svgd`: psi = |x|^2 / 2, K = k I [Liu2016, eq. 8];
* :func:`msvgd`: K = k I on theta (paper, eq. 9, "MSVGD");
* :func:`svmd`: the adaptive kernel K_t = E_{q_t}[k^{1/2}(., z) hess psi(z) k^{1/2}(z, .)]
  with k^{1/2} the square-root kernel of k in L2(q_t) (paper, eq. 11, "SVMD"), computed
  from the eigen-decomposition of the Gram matrix (top eigenpairs by a trace-share
  threshold) in the factored form: an MSVGD step with k^{1/2}, times hess psi at each
  particle, then k^{1/2} again (no n x n x d x d tensor);
* :func:`svng`: hess psi replaced by a metric G(theta) (e.g. the Fisher information) on an
  unconstrained space, the step pulled back by G^{-1} (paper, section 4.3, "SVNG").

Step sizes: ``step_size`` (a float or an ``optax`` schedule ``count -> eps``) is the
theory's eps (SGD on eta); ``optimizer`` takes any optax GradientTransformation, which is fed
-g (a descent direction); :func:`rmsprop` is the reference code's adaptive scheme.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ..base import Algorithm, PyTree, StepSize, as_float
from ..validation import (check_bool, check_int, check_positive, check_scalar_logdensity,
                          check_step_size, check_traced)
from . import mirror as mirror_lib
from .kernels import Kernel, Preconditioner, imq, rbf, stein_direction

__all__ = ["SteinState", "SteinInfo", "svgd", "msvgd", "svmd", "svng", "rmsprop",
           "polynomial_decay", "dirichlet_dual_logdensity", "svmd_direction", "to_arviz"]


class SteinState(NamedTuple):
    """Particles of a Stein sampler.

    Attributes:
      position: the particles theta, a pytree with a leading particle axis (n, ...).
      dual: (n, D) the flattened dual coordinates eta = grad psi(theta) (theta for SVGD/SVNG);
        the sampler moves these and recomputes ``position`` from them.
      opt_state: the optax state of the step-size rule.
    """

    position: PyTree
    dual: jax.Array
    opt_state: Any


class SteinInfo(NamedTuple):
    """Per-step statistics: the kernel bandwidth h and the root mean square of the direction."""

    bandwidth: jax.Array
    direction_rms: jax.Array


def rmsprop(learning_rate: float) -> optax.GradientTransformation:
    """The adaptive scheme of the mirrored-Stein reference code: Keras RMSprop on eta
    (decay 0.9, eps = 1e-7 added outside the square root, zero initial accumulator);
    learning rates 0.1 (Dirichlet, quadratic) and 0.01 (box) there."""
    check_positive("learning_rate", learning_rate)
    return optax.rmsprop(learning_rate, decay=0.9, eps=1e-7, eps_in_sqrt=False)


def polynomial_decay(step_size: float, *, power: float = 0.5, scale: float = 100.0) -> Callable:
    """eps_t = step_size * (1 + t / scale)^(-power), an optax schedule (``count -> eps``)."""
    check_positive("step_size", step_size)
    check_positive("scale", scale)
    if not 0.0 <= float(power) <= 1.0:
        raise ValueError(f"power must lie in [0, 1], got {power!r}")
    return lambda count: step_size * (1.0 + count / scale) ** (-power)


def dirichlet_dual_logdensity(alpha) -> Callable:
    """log p_H(eta) of Dirichlet(alpha) in the entropic simplex map's dual coordinates.

    p_H(eta) = p(theta) det hess psi*(eta) = prod_k theta_k^(alpha_k - 1) prod_k theta_k
    = prod_k theta_k^alpha_k with log theta = log_softmax([eta, 0]); its gradient is the
    dual score alpha_{1:K-1} - sum(alpha) theta. Exact in float32 however close a
    particle is to a face (no 1 - sum(theta) cancellation). Pass it as
    ``dual_logdensity_fn`` to :func:`msvgd` / :func:`svmd`.
    """
    a = np.asarray(alpha, dtype=float)
    if a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"alpha must have K >= 2 finite entries, all > 0, got {alpha!r}")

    def logdensity(eta):
        return jnp.sum(jnp.asarray(a, eta.dtype) * jax.nn.log_softmax(jnp.append(eta, 0.0)))

    return logdensity


# ---------------------------------------------------------------------------- helpers

def _flatten_particles(position):
    """(n, ...) pytree (float leaves: ``init`` converts integers first) -> ((n, D) array,
    unravel one particle)."""
    leaves = jax.tree.leaves(position)
    if not leaves:
        raise ValueError("position holds no arrays")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError("position must be an (n, d) array or a pytree whose leaves share a "
                         f"leading particle axis, got shapes {[jnp.shape(x) for x in leaves]}")
    n = sizes.pop()
    if n < 2:
        raise ValueError(f"position must hold n >= 2 particles (the kernel interaction needs "
                         f"pairs), got n = {n}")
    one = jax.tree.map(lambda x: x[0], position)
    _, unravel = ravel_pytree(one)
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(position)
    return flat, unravel


def _make_optimizer(step_size, optimizer):
    if (step_size is None) == (optimizer is None):
        raise ValueError("give exactly one of step_size (the theory's eps: a float or a "
                         "schedule count -> eps) and optimizer (an optax GradientTransformation), "
                         f"got step_size={step_size!r}, optimizer={optimizer!r}")
    if optimizer is not None:
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError("optimizer must be an optax GradientTransformation, got "
                            f"{type(optimizer).__name__}")
        return optimizer
    check_step_size("step_size", step_size)
    return optax.scale_by_learning_rate(step_size)


def _check_kernel(kernel):
    if not isinstance(kernel, Kernel):
        raise TypeError("kernel must be a samplers.stein.kernels.Kernel (rbf() or imq()), got "
                        f"{type(kernel).__name__}")


def _check_block(block_size):
    check_int("block_size", block_size)


SVMD_MATRICES = 4


def _check_max_particles(max_particles):
    if max_particles is not None:
        check_int("max_particles", max_particles, minimum=2)


def _check_dense_size(name, n, max_particles, itemsize):
    """SVMD/SVNG need a dense n x n ``eigh``: refuse n above ``max_particles`` before any
    memory is allocated, naming the memory it would take and the blocked alternative."""
    if max_particles is None or n <= max_particles:
        return
    gib = SVMD_MATRICES * n * n * itemsize / 2**30
    raise ValueError(
        f"{name} with n = {n} particles needs a dense n x n eigen-decomposition of the Gram "
        f"matrix (the square-root kernel; O(n^3) time, about {gib:.1f} GiB for its "
        f"{SVMD_MATRICES} n x n matrices), above max_particles = {max_particles}. Use msvgd "
        "(blocked, memory O(n * block_size)) for this many particles, or pass a larger "
        "max_particles (or None) if the memory is there.")


def _check_threshold(threshold, jitter):
    if threshold is not None and not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1] or be None (keep every eigenpair), "
                         f"got {threshold!r}")
    if float(jitter) < 0 or not math.isfinite(float(jitter)):
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter!r}")


def _preconditioner(mm: mirror_lib.MirrorMap, theta, centred):
    """The inverse Hessians of ``mm`` at the particles, in the blocked kernel's format."""
    if mm.structure == "identity":
        return Preconditioner()
    factors = jax.vmap(mm.factors)(theta)
    mx = jax.vmap(mm.inv_hess_mul)(theta, centred)
    if mm.structure == "diagonal":
        return Preconditioner(diag=factors, mx=mx)
    if mm.structure == "diag_minus_rank1":
        return Preconditioner(diag=factors[0], rank1=factors[1], mx=mx)
    return Preconditioner(dense=factors, mx=mx)


def _dual_scores(mm, logdensity_fn, dual_logdensity_fn, theta, eta):
    """s_H = hess psi^{-1} grad log p + div(hess psi^{-1}), or grad log p_H(eta) if given."""
    if dual_logdensity_fn is not None:
        return jax.vmap(jax.grad(dual_logdensity_fn))(eta)
    grads = jax.vmap(jax.grad(logdensity_fn))(theta)
    return jax.vmap(mm.inv_hess_mul)(theta, grads) + jax.vmap(mm.div_inv_hess)(theta)


def _validate_particles(name, mm, theta, inside, scores):
    """Checks at init, on the host: finite, inside the domain, finite scores (of concrete
    arrays; through :func:`~samplers.validation.check_traced` when ``init`` is traced)."""
    x = np.asarray(theta)
    bad = np.where(~np.all(np.isfinite(x), axis=1))[0]
    if bad.size:
        raise ValueError(f"position must be finite; particle {int(bad[0])} is {x[bad[0]]!r}")
    inside = np.asarray(inside)
    if not np.all(inside):
        i = int(np.where(~inside)[0][0])
        raise ValueError(f"position: particle {i} = {x[i]!r} lies outside {mm.domain} "
                         f"(the domain of the {mm.name} mirror map); every particle must be "
                         "strictly inside")
    s = np.asarray(scores)
    bad = np.where(~np.all(np.isfinite(s), axis=1))[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} has a non-finite gradient at particle {i} = {x[i]!r}: "
                         f"{s[i]!r}; the score must be finite at every initial particle")


# ----------------------------------------------------------------------------- SVMD core

def svmd_direction(theta, scores, kernel: Kernel, h, pre: Preconditioner, hess_mul_fn,
                   threshold: Optional[float] = 0.98, jitter: float = 1e-5,
                   block_size: int = 256):
    """The SVMD dual direction g_k ([Shi2022, eq. 11] with the particle
    square-root kernel, Algorithm 2), in the factored form

        phi_m = (1/n) sum_l [S_lm s_l + M_l grad_{theta_l} k^{1/2}(theta_m, theta_l)]
        g_k   = (1/n) sum_m S_km hess psi(theta_m) phi_m,

    S = k^{1/2} at the particles. With G + jitter I = E diag(lambda) E^T (top r eigenpairs,
    r = 1 + #{cumulative trace share < threshold}; all when ``threshold`` is None),
    S = E diag(sqrt(n lambda)) E^T and, from the Nystrom extension of the eigenfunctions,
    sum_l M_l grad_{theta_l} k^{1/2}(theta_m, theta_l) = sum_p P_mp R_p with
    P = E diag(sqrt(n / lambda)) E^T and R_p = sum_l M_l grad_{theta_l} k(theta_l, theta_p)
    (the MSVGD repulsion, computed in row blocks). The square-root kernel needs the Gram
    matrix's eigenpairs: a dense ``eigh``, O(n^3) time and about
    :data:`SVMD_MATRICES` n x n matrices of memory (the Gram matrix, its eigenvectors, S, P).

    Args:
      theta: (n, d); scores: (n, d) dual scores s_H; kernel, h: the base kernel k;
      pre: the M_l = hess psi(theta_l)^{-1}; hess_mul_fn: (index-free) (n, d) -> (n, d)
      applying hess psi at each particle; threshold, jitter: truncation and Gram jitter;
      block_size: rows per block of the repulsion R.
    """
    n = theta.shape[0]
    x = theta - jnp.mean(theta, axis=0)
    sqn = jnp.sum(x * x, axis=1)
    sq = jnp.maximum(sqn[:, None] + sqn[None, :] - 2.0 * x @ x.T, 0.0)
    gram = kernel.profile(sq, h) + jitter * jnp.eye(n, dtype=x.dtype)
    lam, vec = jnp.linalg.eigh(gram)
    lam, vec = lam[::-1], vec[:, ::-1]
    if threshold is None:
        keep = lam > 0
    else:
        share = jnp.cumsum(lam) / jnp.sum(lam)
        r = 1 + jnp.sum(share < threshold)
        keep = (jnp.arange(n) < r) & (lam > 0)
    lam_safe = jnp.where(keep, lam, 1.0)
    s_half = jnp.where(keep, jnp.sqrt(n * lam_safe), 0.0)
    p_half = jnp.where(keep, jnp.sqrt(n / lam_safe), 0.0)
    S = (vec * s_half) @ vec.T
    P = (vec * p_half) @ vec.T
    repulsion = n * stein_direction(theta, None, kernel, h, pre, block_size)
    phi = (S.T @ scores + P @ repulsion) / n
    return S @ hess_mul_fn(phi) / n


# --------------------------------------------------------------------------- factory

def _check_mesh(mesh):
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh or None, got {type(mesh).__name__}")


def _auto(mesh: Mesh) -> Mesh:
    """``mesh`` with Auto axis types: arrays outside the particle ``shard_map`` keep
    compiler-chosen layouts, so the step needs no mesh context (``jax.set_mesh``) even
    when the user's mesh is Explicit (``jax.make_mesh``'s default)."""
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)


def _place_on(mesh: Mesh, position):
    """The particles split over the first axis of ``mesh`` (n must be a multiple of its size)."""
    axis = mesh.axis_names[0]
    sizes = {jnp.shape(leaf)[0] for leaf in jax.tree.leaves(position) if jnp.ndim(leaf)}
    for n in sizes:
        if n % mesh.shape[axis]:
            raise ValueError(f"position: the number of particles ({n}) must be a multiple of "
                             f"the mesh axis {axis!r} size ({mesh.shape[axis]})")
    return jax.device_put(position, NamedSharding(_auto(mesh), PartitionSpec(axis)))


def _mirrored(name, logdensity_fn, mm, kernel, step_size, optimizer, block_size,
              dual_logdensity_fn, direction, pull_back=None, max_particles=None, mesh=None,
              throw=True):
    if not callable(logdensity_fn):
        raise TypeError(f"logdensity_fn must be a callable theta -> scalar, got "
                        f"{type(logdensity_fn).__name__}")
    if dual_logdensity_fn is not None and not callable(dual_logdensity_fn):
        raise TypeError("dual_logdensity_fn must be a callable eta -> scalar or None, got "
                        f"{type(dual_logdensity_fn).__name__}")
    if not isinstance(mm, mirror_lib.MirrorMap):
        raise TypeError("mirror_map must be a samplers.stein.mirror.MirrorMap (e.g. "
                        f"mirror.simplex_entropic()), got {type(mm).__name__}")
    _check_kernel(kernel)
    _check_block(block_size)
    _check_mesh(mesh)
    if mesh is not None and pull_back is not None:
        raise ValueError(f"{name} takes no mesh: its step pulls back by the metric at every "
                         "particle, which the sharded direction does not compute")
    opt = _make_optimizer(step_size, optimizer)
    check_bool("throw", throw)
    score_name = "logdensity_fn" if dual_logdensity_fn is None else "dual_logdensity_fn"

    def init(position, key=None):
        position = as_float(position)  # integer/bool particles -> the default float dtype
        if mesh is not None:  # the particles start split over the mesh (see sharded_direction)
            position = _place_on(mesh, position)
        theta, unravel = _flatten_particles(position)
        _check_dense_size(name, theta.shape[0], max_particles, theta.dtype.itemsize)
        # shapes only (also under jit/vmap): one particle must be a valid input, and the
        # log-density a scalar
        check_scalar_logdensity("logdensity_fn", logdensity_fn, unravel(theta[0]),
                                position_name="one particle of initial_position")
        if dual_logdensity_fn is not None:
            eta_one = jax.eval_shape(mm.grad_psi, theta[0])
            check_scalar_logdensity("dual_logdensity_fn", dual_logdensity_fn, eta_one,
                                    position_name="the dual coordinates of one particle")
        if throw:  # on the host now, or by one callback when init is traced (inside run)
            eta, scores, inside = _checked_parts(theta, unravel)
            check_traced(functools.partial(_validate_particles, score_name, mm),
                         theta, inside, scores)
        else:
            eta = jax.vmap(mm.grad_psi)(theta)
        return SteinState(position, eta, opt.init(eta))

    @functools.partial(jax.jit, static_argnums=1)
    def _checked_parts(theta, unravel):
        eta = jax.vmap(mm.grad_psi)(theta)
        inside = jax.vmap(mm.contains)(theta)
        safe = jnp.where(inside[:, None], theta, theta[jnp.argmax(inside)])
        safe_eta = jax.vmap(mm.grad_psi)(safe)
        return eta, scores_at(safe, safe_eta, unravel), inside

    def flat_logdensity(unravel):
        return lambda t: logdensity_fn(unravel(t))

    def scores_at(theta, eta, unravel=None):
        lp = logdensity_fn if unravel is None else flat_logdensity(unravel)
        return _dual_scores(mm, lp, dual_logdensity_fn, theta, eta)

    def sharded_direction(eta, unravel):
        """The direction with the particles split over the mesh's first axis: each device
        computes the scores of its own particles, gathers every particle and score (O(n d)
        per device), and sums the interaction for its own rows (memory O(n_local * block))."""
        auto = _auto(mesh)
        axis = mesh.axis_names[0]
        spec = PartitionSpec(axis)

        def local(eta_local):
            theta_local = jax.vmap(mm.grad_psi_star)(eta_local)
            scores_local = scores_at(theta_local, eta_local, unravel)
            theta = jax.lax.all_gather(theta_local, axis, tiled=True)
            scores = jax.lax.all_gather(scores_local, axis, tiled=True)
            h = kernel.bandwidth_for(theta)
            # eta is not gathered: the blocked directions (svgd, msvgd) do not use it
            return direction(theta, None, scores, h, rows=theta_local), h

        return jax.shard_map(local, mesh=auto, in_specs=spec, out_specs=(spec, PartitionSpec()),
                             check_vma=False)(eta)

    def step(key, state, batch=None):
        _, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], state.position))
        eta = state.dual
        if mesh is None:
            theta = jax.vmap(mm.grad_psi_star)(eta)
            h = kernel.bandwidth_for(theta)
            g = direction(theta, eta, scores_at(theta, eta, unravel), h)
        else:
            g, h = sharded_direction(eta, unravel)
        if pull_back is not None:
            g = pull_back(theta, g)
        updates, opt_state = opt.update(-g, state.opt_state, eta)
        eta = optax.apply_updates(eta, updates)
        theta = jax.vmap(mm.grad_psi_star)(eta)
        position = jax.vmap(unravel)(theta)
        info = SteinInfo(h, jnp.sqrt(jnp.mean(jnp.square(g))))
        return SteinState(position, eta, opt_state), info

    step_value = step_size if (step_size is not None and not callable(step_size)) else None
    return Algorithm(init=init, step=step,
                     params=None if step_value is None else StepSize(step_value), name=name)


def svgd(logdensity_fn: Callable, *, kernel: Optional[Kernel] = None, step_size=None,
         optimizer=None, block_size: int = 256, mesh: Optional[Mesh] = None,
         throw: bool = True) -> Algorithm:
    """Stein variational gradient descent [Liu2016, Algorithm 1 and eq. 8]:

        x_i <- x_i + eps (1/n) sum_j [k(x_j, x_i) grad log p(x_j) + grad_{x_j} k(x_j, x_i)],

    the mirrored step of [Shi2022] (eq. 8) with psi = |x|^2 / 2.

    Args:
      logdensity_fn: position (one particle, any pytree) -> scalar log p.
      kernel: :func:`~samplers.stein.kernels.rbf` (default, median/log n bandwidth) or
        :func:`~samplers.stein.kernels.imq`.
      step_size: eps, a float or a schedule ``count -> eps``; or
      optimizer: any optax GradientTransformation (fed -phi).
      block_size: rows per block of the O(n^2) interaction; memory O(n * block_size).
      mesh: a ``jax.sharding.Mesh``: the particles are split over its first axis (n a
        multiple of its size; e.g. ``jax.make_mesh((jax.device_count(),), ("particles",))``).
        Each device evaluates the scores of its particles and the interaction of its rows
        with all n (an all-gather of the particles and scores per step); the result equals
        the unsharded step up to float round-off.
      throw: check the initial particles in ``init`` (finite, inside the mirror map's
        domain, finite scores; ValueError naming the particle), also when ``init`` is traced
        inside ``samplers.run``, by one host callback
        (:func:`samplers.validation.check_traced`); False leaves the check out.

    Returns ``Algorithm(init, step)``; ``init(position (n, ...), key=None) -> SteinState``,
    ``step(key, state, batch=None) -> (SteinState, SteinInfo)`` (deterministic: ``key``
    unused). Use with ``samplers.run(key, alg, particles, num_steps)``.
    """
    kernel = rbf() if kernel is None else kernel
    mm = mirror_lib.identity()

    def direction(theta, eta, scores, h, rows=None):
        return stein_direction(theta, scores, kernel, h, None, block_size, rows)

    return _mirrored("svgd", logdensity_fn, mm, kernel, step_size, optimizer, block_size,
                     None, direction, mesh=mesh, throw=throw)


def msvgd(logdensity_fn: Callable, mirror_map: mirror_lib.MirrorMap, *,
          kernel: Optional[Kernel] = None, step_size=None, optimizer=None,
          block_size: int = 256, dual_logdensity_fn: Optional[Callable] = None,
          mesh: Optional[Mesh] = None, throw: bool = True) -> Algorithm:
    """Mirrored SVGD [Shi2022, eq. 9] (K = k I, kernel on theta):

        eta_i <- eta_i + eps (1/n) sum_j [k(theta_j, theta_i) s_H(theta_j)
                                         + hess psi(theta_j)^{-1} grad_{theta_j} k(theta_j, theta_i)],
        theta_i = grad psi*(eta_i),  s_H = hess psi^{-1} grad log p + div(hess psi^{-1}).

    Args:
      logdensity_fn: theta (d,) -> scalar log p on the mirror map's domain.
      mirror_map: a :class:`~samplers.stein.mirror.MirrorMap`.
      kernel: default :func:`~samplers.stein.kernels.imq` (median bandwidth, as the reference).
      step_size / optimizer: as in :func:`svgd`; :func:`rmsprop` is the paper's scheme.
      block_size: rows per block of the interaction (memory O(n * block_size)).
      dual_logdensity_fn: optional eta -> log p_H(eta) (the dual target's log-density), whose
        gradient replaces s_H: numerically exact near the boundary (e.g.
        :func:`dirichlet_dual_logdensity`).
      mesh: split the particles over a mesh's first axis, as in :func:`svgd`.
      throw: check the initial particles, also inside ``samplers.run``, as in :func:`svgd`.

    ``init`` takes theta (n, d) strictly inside the domain (checked when concrete).
    """
    kernel = imq() if kernel is None else kernel

    def direction(theta, eta, scores, h, rows=None):
        centred = theta - jnp.mean(theta, axis=0)
        return stein_direction(theta, scores, kernel, h,
                               _preconditioner(mirror_map, theta, centred), block_size, rows)

    return _mirrored("msvgd", logdensity_fn, mirror_map, kernel, step_size, optimizer,
                     block_size, dual_logdensity_fn, direction, mesh=mesh, throw=throw)


def svmd(logdensity_fn: Callable, mirror_map: mirror_lib.MirrorMap, *,
         kernel: Optional[Kernel] = None, step_size=None, optimizer=None,
         threshold: Optional[float] = 0.98, jitter: float = 1e-5,
         dual_logdensity_fn: Optional[Callable] = None, block_size: int = 256,
         max_particles: Optional[int] = 10_000, throw: bool = True) -> Algorithm:
    """Stein variational mirror descent [Shi2022, eq. 11, Algorithm 2]:
    the mirrored step with the adaptive kernel
    K_t(theta, theta') = (1/n) sum_m k^{1/2}(theta, theta_m) hess psi(theta_m) k^{1/2}(theta_m, theta')
    (see :func:`svmd_direction`). With psi = |x|^2 / 2 and ``threshold=None, jitter=0`` it is
    SVGD step for step; with a constant Hessian A it moves theta by A^{-1} phi_SVGD.

    Args:
      logdensity_fn, mirror_map, kernel, step_size, optimizer, dual_logdensity_fn: as in
        :func:`msvgd`.
      threshold: keep the top eigenpairs of the Gram matrix holding this share of its trace
        (0.98-0.998 in the reference experiments); None keeps all.
      jitter: added to the Gram matrix's diagonal before ``eigh`` (1e-5 in the reference).
      block_size: rows per block of the MSVGD-type repulsion inside the step.
      max_particles: ``init`` raises a ValueError for more particles than this (None: no
        limit), naming n, the memory and the alternative (:func:`msvgd`).
      throw: check the initial particles, also inside ``samplers.run``, as in :func:`svgd`.

    Memory and time: the square-root kernel comes from the eigenpairs of the n x n Gram
    matrix (paper, Algorithm 2), so each step holds about ``SVMD_MATRICES`` = 4 dense
    n x n matrices (4 n^2 x 4 bytes in float32: 0.4 GB at n = 5,000, 1.6 GB at 10,000) and
    runs an O(n^3) ``eigh`` (seconds per step at n = 2,000 on two CPU cores). For more
    particles use :func:`msvgd`, whose interaction is blocked (memory O(n * block_size)).
    """
    kernel = imq() if kernel is None else kernel
    _check_threshold(threshold, jitter)
    _check_block(block_size)
    _check_max_particles(max_particles)

    def direction(theta, eta, scores, h):
        centred = theta - jnp.mean(theta, axis=0)
        pre = _preconditioner(mirror_map, theta, centred)
        if mirror_map.hess_mul_dual is not None:
            hess = lambda v: jax.vmap(mirror_map.hess_mul_dual)(eta, v)  # noqa: E731
        else:
            hess = lambda v: jax.vmap(mirror_map.hess_mul)(theta, v)  # noqa: E731
        return svmd_direction(theta, scores, kernel, h, pre, hess, threshold, float(jitter),
                              block_size)

    return _mirrored("svmd", logdensity_fn, mirror_map, kernel, step_size, optimizer,
                     block_size, dual_logdensity_fn, direction, max_particles=max_particles,
                     throw=throw)


def svng(logdensity_fn: Callable, metric_fn: Callable, *, kernel: Optional[Kernel] = None,
         step_size=None, optimizer=None, threshold: Optional[float] = 0.98,
         jitter: float = 1e-5, div_inv_metric_fn: Optional[Callable] = None,
         block_size: int = 256, max_particles: Optional[int] = 10_000,
         throw: bool = True) -> Algorithm:
    """Stein variational natural gradient [Shi2022, section 4.3]: SVMD with
    hess psi replaced by a positive-definite metric G(theta) on R^d, and the step taken in
    theta by the natural-gradient pull-back

        theta_k <- theta_k + eps G(theta_k)^{-1} g_k,

    g_k the SVMD direction (:func:`svmd_direction`) with M = G^{-1} and
    s_H = G^{-1} grad log p + div(G^{-1}).

    Args:
      logdensity_fn: theta (d,) -> scalar.
      metric_fn: theta (d,) -> (d, d) positive-definite G (e.g. Fisher information + prior
        precision of a Bayesian logistic regression).
      kernel: default :func:`~samplers.stein.kernels.rbf` (as the reference's LR experiment).
      step_size / optimizer, threshold, jitter, block_size, max_particles, throw: as in
        :func:`svmd` (the same dense n x n ``eigh`` and memory bound; for more particles
        use :func:`svgd`).
      div_inv_metric_fn: theta -> div(G^{-1})(theta), (d,); default: ``jax.jacfwd``.
    """
    if not callable(metric_fn):
        raise TypeError(f"metric_fn must be a callable theta -> (d, d), got "
                        f"{type(metric_fn).__name__}")
    kernel = rbf() if kernel is None else kernel
    _check_threshold(threshold, jitter)
    _check_block(block_size)
    _check_max_particles(max_particles)

    def inv_metric(t):
        return jnp.linalg.inv(metric_fn(t))

    def div(t):
        if div_inv_metric_fn is not None:
            return div_inv_metric_fn(t)
        return jnp.einsum("ijj->i", jax.jacfwd(inv_metric)(t))

    mm = mirror_lib.MirrorMap(
        "metric", lambda t: t, lambda e: e, lambda t, v: jnp.linalg.solve(metric_fn(t), v),
        lambda t, v: metric_fn(t) @ v, div, lambda t: jnp.all(jnp.isfinite(t)), "dense",
        inv_metric, domain="R^d")

    def direction(theta, eta, scores, h):
        centred = theta - jnp.mean(theta, axis=0)
        pre = _preconditioner(mm, theta, centred)
        hess = lambda v: jax.vmap(mm.hess_mul)(theta, v)  # noqa: E731
        return svmd_direction(theta, scores, kernel, h, pre, hess, threshold, float(jitter),
                              block_size)

    def pull_back(theta, g):
        return jax.vmap(mm.inv_hess_mul)(theta, g)

    return _mirrored("svng", logdensity_fn, mm, kernel, step_size, optimizer, block_size, None,
                     direction, pull_back, max_particles, throw=throw)


# ---------------------------------------------------------------------------- export

def to_arviz(result, draw: int = -1, default_name: str = "x"):
    """ArviZ data with the particles as one chain (draw = particle).

    Args:
      result: a :class:`samplers.Trace` from ``samplers.run`` (positions (chain, draw, n, ...);
        chain 0 and recorded draw ``draw`` are exported), a :class:`SteinState`, or an
        (n, ...) pytree of particles.
    """
    from ..trace import from_dict, named_leaves

    if hasattr(result, "positions"):
        particles = jax.tree.map(lambda x: x[0, draw], result.positions)
    elif isinstance(result, SteinState):
        particles = result.position
    else:
        particles = result
    posterior = {k: np.asarray(v)[None] for k, v in named_leaves(particles, default_name).items()}
    return from_dict({"posterior": posterior})

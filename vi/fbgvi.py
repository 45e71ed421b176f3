"""Forward-backward Gaussian VI in the Bures-Wasserstein space, and its baselines.

Implements "Forward-backward Gaussian variational inference via JKO in the
Bures-Wasserstein space" [Diao2023].

Target pi ∝ exp(-V) with V = -logdensity_fn. Over Gaussians q = N(m, Sigma),
KL(q || pi) = E_q[V] - H(q) + log Z. One FB-GVI step of size h [Diao2023, Algorithm 1]:

* forward (Bures-Wasserstein gradient step on the potential energy E_q[V]):
  m' = m - h E_q[grad V],  Sigma' = M Sigma M  with  M = I - h E_q[hess V];
* backward (JKO / proximal step on the negative entropy, closed form, [Diao2023, eq. (5)]):
  Sigma_next = 1/2 (Sigma' + 2hI + (Sigma' (Sigma' + 4hI))^{1/2}),  m_next = m'.

Expectations under q are computed as ``expectation=`` "exact_gaussian" (evaluate at the
mean: exact when V is quadratic, i.e. a Gaussian target), "gauss_hermite" (tensor-product
Gauss-Hermite quadrature, exact for polynomials of degree < 2 * num_points per coordinate)
or "monte_carlo" (``num_samples`` fresh draws each step; stochastic FB-GVI,
[Diao2023, Algorithm 2], is the one-draw case). Hessians are either exact (``jax.hessian``) or, with
``hessian="stein"``, estimated from gradients only by Stein's lemma
E[hess V(X)] = E[Sigma^{-1} (X - m) grad V(X)^T] = C^{-T} E[u grad V(m + C u)^T] for
Sigma = C C^T, u ~ N(0, I) (symmetrised).

**SPD by construction.** The backward map acts on the spectrum of Sigma' alone
(Sigma' and Sigma' + 4hI commute): each eigenvalue s >= 0 goes to
((sqrt(s) + sqrt(s + 4h)) / 2)^2 >= h. We store the symmetric square root
U diag((sqrt(s) + sqrt(s + 4h)) / 2) U^T, so every covariance an FB-GVI step returns has
all eigenvalues >= h, even if Sigma' is singular (it is when h equals 1/lambda for an
eigenvalue lambda of the Hessian; tiny negative rounding in s is clipped to 0).

Baselines: :func:`bwgd`, Bures-Wasserstein gradient descent [Lambert2022], the explicit step on the whole KL,
M = I - h (E[hess V] - Sigma^{-1}) [Diao2023, eq. (3)]; and :func:`reparam_vi`, the
reparameterisation-gradient ELBO maximisation over (m, Cholesky factor) with an optax
optimiser [Titsias2014; Kucukelbir2017].

Each is a :class:`samplers.Algorithm` whose state's ``position`` is the current
:class:`Gaussian` (mean and covariance factor), so :func:`samplers.run` drives it like any
sampler: ``trace.positions`` holds the Gaussian after each kept step, ``trace.stats`` the
per-step info (:class:`VIInfo`), with run's thinning, progress bar, minibatches
(``batches=``), non-finite guard, checkpoints and ``trace.to_arviz()`` (variables ``mean``
and ``scale``). :func:`fit` is the one-chain shorthand returning the final Gaussian;
:meth:`Gaussian.kl_to`, :meth:`Gaussian.w2_squared_to` and :func:`elbo` apply to a trace's
positions.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplers.base import Algorithm, Bound, StepSize, as_float, with_params
from samplers.run import run
from samplers.trace import Trace
from samplers.validation import (check_bool, check_choice, check_int, check_positive,
                                 check_scalar_logdensity, check_traced, is_concrete)

from .gaussian import Gaussian, check_gaussian

__all__ = [
    "VIState", "VIInfo", "ReparamInfo", "fbgvi", "sfbgvi", "bwgd", "reparam_vi", "fit", "elbo",
    "jko_entropy_step", "expected_grad_hess", "minibatch_logdensity", "ravel_logdensity",
    "default_step_size",
]

EXPECTATIONS = ("monte_carlo", "gauss_hermite", "exact_gaussian")
HESSIANS = ("exact", "stein")
MAX_QUADRATURE_NODES = 100_000
DEFAULT_STEP_FACTOR = 1.0       # step_size="curvature": h_k = c / max(L_0, ||H_k||_2), c = this
STEP_RULES = ("backtracking", "curvature")
DEFAULT_STEP_RULE = "backtracking"  # what step_size=None selects (docs/vi.md: why)
BACKTRACK_GROWTH = 2.0          # "backtracking": each step first tries twice the last accepted h
BACKTRACK_SHRINK = 0.5          # and halves it until the descent test passes
MAX_BACKTRACKS = 30             # 2^-30: a step that fails this often leaves q where it was
ROUNDOFF_SLACK = 64.0           # the descent test tolerates 64 eps * (|V(x)| + |V(x+)|) round-off
DENSE_HESSIAN_MAX_DIM = 1024    # above this, L comes from Hessian-vector power iteration
POWER_ITERATIONS = 50


# --------------------------------------------------------------------------- types

class VIState(NamedTuple):
    """State of a Gaussian VI algorithm (a :class:`samplers.Algorithm`'s state).

    Attributes:
      position: the current :class:`Gaussian` (mean (d,), scale (d, d)): what
        ``samplers.run`` records per draw, ``trace.positions``.
      step_size: with an adaptive rule (``step_size=None``, "backtracking" or "curvature"),
        h_0, the step chosen at ``init`` from the target's curvature at ``q0``
        (:func:`default_step_size`), which is also the rule's ceiling unless
        ``max_step_size`` was given; None when the algorithm has a fixed step size.
      last_step_size: "backtracking" only: the last accepted h_k (the next step tries
        twice it first); None otherwise.
      unconstrained: reparameterised VI only: (mean, raw Cholesky factor), the parameters
        the optimiser updates; None otherwise.
      opt_state: reparameterised VI only: the optax state; None otherwise.
    """

    position: Gaussian
    step_size: Any = None
    last_step_size: Any = None
    unconstrained: Any = None
    opt_state: Any = None


class VIInfo(NamedTuple):
    """Per-step statistics of FB-GVI and BW-GD (``trace.stats`` of ``samplers.run``).

    Attributes:
      min_eigenvalue: smallest eigenvalue of the new covariance (FB-GVI: >= step size).
      grad_norm: |E_q[grad V]| as estimated this step.
      step_size: the step size this step used (with ``step_size="curvature"`` it is
        h_k = c / max(L_0, ||E_q[hess V]||_2), see :func:`default_step_size`; with
        ``"backtracking"`` the accepted h_k, or the last one tried when every trial failed
        and q stayed put).
      num_backtracks: how many times this step halved h before the descent test passed
        (``MAX_BACKTRACKS``: none passed, q unchanged); 0 for the other rules.
    """

    min_eigenvalue: jax.Array
    grad_norm: jax.Array
    step_size: jax.Array
    num_backtracks: jax.Array


class ReparamInfo(NamedTuple):
    """Per-step statistics of :func:`reparam_vi`.

    Attributes:
      min_eigenvalue: smallest eigenvalue of the new covariance.
      grad_norm: the norm of the loss gradient (mean and raw Cholesky factor together).
    """

    min_eigenvalue: jax.Array
    grad_norm: jax.Array


class _Config(NamedTuple):
    """What an FB-GVI / BW-GD transition compiles in (hashable: the static part of
    ``samplers.run``'s program; the step size of the "fixed" rule is traced)."""

    logdensity_fn: Callable
    method: str        # "fb" or "bwgd"
    expectation: Any   # a name in EXPECTATIONS, or a callable
    num_samples: int   # Monte Carlo draws (0 unless expectation="monte_carlo")
    num_points: int    # Gauss-Hermite points (0 unless expectation="gauss_hermite")
    hessian: str
    rule: str          # "fixed", "backtracking" or "curvature"
    antithetic: bool


def _call(logdensity_fn, x, batch):
    return logdensity_fn(x) if batch is None else logdensity_fn(x, batch)


# ---------------------------------------------------------------------- validation

def _check_logdensity(logdensity_fn, dim):
    if not callable(logdensity_fn):
        raise TypeError(f"logdensity_fn must be callable, got {type(logdensity_fn).__name__}")
    if dim is not None:
        check_int("dim", dim)


def _takes_batch(logdensity_fn) -> bool:
    """Whether ``logdensity_fn`` is a minibatch log-density ``(x, batch) -> scalar``: its
    signature has a second positional parameter without a default. A callable without a
    signature (a builtin) is taken as ``x -> scalar``."""
    try:
        parameters = inspect.signature(logdensity_fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.default is p.empty and p.kind in
                  (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2


def _start(logdensity_fn, dim, q0) -> Gaussian:
    """``q0`` validated against the target (:func:`~vi.gaussian.check_gaussian`; the
    log-density evaluated on shapes only, unless it needs a minibatch, which only ``step``
    has), integer or boolean entries converted to the default float dtype (the library's
    rule, :func:`samplers.base.as_float`). Works under ``jit``/``vmap`` (shape checks)."""
    if isinstance(q0, Gaussian):
        q0 = as_float(q0)
    check_gaussian("q0", q0, dim)
    if not _takes_batch(logdensity_fn):
        expected = None if dim is None else f"({dim},)"
        check_scalar_logdensity("logdensity_fn", logdensity_fn, q0.mean, position_name="q0",
                                given=f"has dimension {q0.dim}", expected_shape=expected)
    return q0


def _init(config: _Config, dim, max_step_size, q0, key=None) -> VIState:
    """``init(q0, key=None)`` of FB-GVI and BW-GD: the validated start and, with an adaptive
    rule, h_0 = :func:`default_step_size` at q0 (and, for "backtracking", the running h)."""
    del key
    q0 = _start(config.logdensity_fn, dim, q0)
    if config.expectation == "gauss_hermite" and config.num_points ** q0.dim > MAX_QUADRATURE_NODES:
        raise ValueError(f"expectation='gauss_hermite' with num_points={config.num_points} in "
                         f"d={q0.dim} needs more than {MAX_QUADRATURE_NODES} nodes; use "
                         "'monte_carlo' or fewer points")
    if config.rule == "fixed":
        return VIState(q0)
    dtype = q0.mean.dtype
    h0 = jnp.asarray(default_step_size(config.logdensity_fn, q0), dtype)
    if config.rule == "curvature":
        return VIState(q0, step_size=h0)
    last = h0 if max_step_size is None else jnp.minimum(h0, jnp.asarray(max_step_size, dtype))
    return VIState(q0, step_size=h0, last_step_size=last)


# ------------------------------------------------------------------ default step size

@functools.partial(jax.jit, static_argnums=0)
def _curvature(logdensity_fn, mean):
    """L = ||hess log p(mean)||_2, the largest |eigenvalue| of the Hessian at ``mean``."""
    d = mean.shape[0]
    if d <= DENSE_HESSIAN_MAX_DIM:
        H = jax.hessian(logdensity_fn)(mean)
        return jnp.max(jnp.abs(jnp.linalg.eigvalsh(0.5 * (H + H.T))))
    grad = jax.grad(logdensity_fn)

    def hvp(v):
        return jax.jvp(grad, (mean,), (v,))[1]

    def power(_, carry):
        v, _ = carry
        w = hvp(v)
        norm = jnp.linalg.norm(w)
        return w / jnp.where(norm > 0, norm, 1.0), norm

    v0 = jax.random.normal(jax.random.key(0), (d,), mean.dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    return jax.lax.fori_loop(0, POWER_ITERATIONS, power, (v0, jnp.zeros((), mean.dtype)))[1]


def default_step_size(logdensity_fn: Callable, q0: Gaussian, factor: float = DEFAULT_STEP_FACTOR):
    """The starting step size of FB-GVI built with ``step_size=None``: h_0 = factor / L_0.

    L_0 = ||hess log pi(m_0)||_2 is the target's curvature at the initial mean (the largest
    absolute eigenvalue of the Hessian: ``jax.hessian`` and ``eigvalsh`` for d <= 1024, else
    50 Hessian-vector power iterations). [Diao2023, Theorems 3.2-3.4] need h <= 1/beta for a
    beta-smooth V (-beta I <= hess V <= beta I); L_0 is the local value of beta at m_0, so
    h_0 = 1/L_0 (factor 1) is the theorem's condition at the start. Curvature elsewhere can be
    much larger (draws of q_0 in a hierarchical model's funnel see tens of times L_0), so an
    algorithm built with ``step_size=None`` also caps every step at the condition for the
    Hessian estimate H_k that step uses: h_k = factor / max(L_0, ||H_k||_2). As h_k then
    depends on the step's own draws, the stationary mean moves: negligibly with 32 draws
    per step, by about 0.1 with one (:func:`sfbgvi` on V = x^2/2 + e^x; docs/vi.md), where a
    fixed step of h_0 turns NaN. On a Gaussian
    target H_k = A, L_0 = beta and h = 1/beta: FB-GVI converges to pi exactly, W2^2 contracting
    by (1 - alpha/beta) per step or better.

    Args:
      logdensity_fn: ``x (d,) -> scalar`` (the full log-density, not a minibatch estimate).
      q0: the initial :class:`~vi.gaussian.Gaussian`; its mean is where L_0 is measured.
      factor: c in h_0 = c / L_0, in (0, 1] (1 for ``step_size=None``; a smaller factor gives
        a more conservative fixed ``step_size`` to pass explicitly).

    Returns a Python float when ``q0`` is concrete (a traced scalar under ``jit``). Raises a
    ValueError when L_0 is not finite or is zero at ``q0.mean`` (then give ``step_size``);
    under ``jit`` (``init`` inside ``samplers.run``) the same check stops the program
    (:func:`samplers.validation.check_traced`).
    """
    check_positive("factor", factor)
    if float(factor) > 1.0:
        raise ValueError(f"factor must lie in (0, 1] (the stability condition h <= 1/L), "
                         f"got {factor!r}")
    L = _curvature(logdensity_fn, q0.mean)
    check_traced(functools.partial(_check_curvature, factor), L)
    return factor / L if not is_concrete(L) else factor / float(L)


def _check_curvature(factor, L) -> None:
    """The check of :func:`default_step_size`, on the host (under ``jit`` too)."""
    L = float(L)
    if not (math.isfinite(L) and L > 0):
        raise ValueError(f"step_size=None chooses h = {factor} / L from the curvature L of "
                         f"logdensity_fn at q0.mean, but L = {L} there (the Hessian is "
                         "not finite, or zero); pass step_size explicitly")


# ----------------------------------------------------------------- expectations

@functools.lru_cache(maxsize=32)
def _hermite_nodes(d: int, num_points: int):
    """Tensor-product Gauss-Hermite nodes (n, d) and weights (n,) for N(0, I_d)."""
    x, w = np.polynomial.hermite_e.hermegauss(num_points)
    w = w / w.sum()
    grids = np.meshgrid(*([x] * d), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=1)
    weights = np.prod(np.meshgrid(*([w] * d), indexing="ij"), axis=0).ravel()
    return nodes, weights


def _standard_nodes(key, d, dtype, expectation, num_samples, num_points, antithetic=False):
    """Standard-normal nodes u (n, d) and weights (n,) for E_q[f] = sum_i w_i f(m + C u_i).

    ``antithetic`` (Monte Carlo, even n): n/2 draws and their negatives. Each node is still
    N(0, I), so the estimates stay unbiased; the pair average cancels every odd-order term
    of f's Taylor expansion about m, in particular the term linear in u that dominates the
    noise of E_q[grad V] on a nearly Gaussian target [Hammersley1956]."""
    if expectation == "monte_carlo":
        if antithetic:
            half = jax.random.normal(key, (num_samples // 2, d), dtype)
            u = jnp.concatenate([half, -half])
        else:
            u = jax.random.normal(key, (num_samples, d), dtype)
        return u, jnp.full((num_samples,), 1.0 / num_samples, dtype)
    if expectation == "gauss_hermite":
        nodes, weights = _hermite_nodes(d, num_points)
        return jnp.asarray(nodes, dtype), jnp.asarray(weights, dtype)
    return jnp.zeros((1, d), dtype), jnp.ones((1,), dtype)


def expected_grad_hess(potential_fn: Callable, q: Gaussian, u, weights, hessian: str = "exact"):
    """E_q[grad V] and E_q[hess V] from standard-normal nodes ``u`` (n, d), weights (n,).

    X_i = m + C u_i with C = ``q.scale``. ``hessian="exact"``: sum_i w_i hess V(X_i)
    (``jax.hessian``, d^2 memory per node). ``hessian="stein"`` (gradients only, Stein's
    lemma; [Diao2023, Sec. 5 and Appendix]): C^{-T} sum_i w_i u_i grad V(X_i)^T, symmetrised;
    unbiased for E[hess V] when the u_i are N(0, I) draws, because
    E[Sigma^{-1}(X - m) grad V(X)^T] = E[hess V(X)] and Sigma^{-1}(X - m) = C^{-T} u.

    Returns ``(g (d,), H (d, d))``.
    """
    x = q.mean + u @ q.scale.T
    grads = jax.vmap(jax.grad(potential_fn))(x)
    g = weights @ grads
    if hessian == "exact":
        H = jnp.einsum("n,nij->ij", weights, jax.vmap(jax.hessian(potential_fn))(x))
    else:
        B = (u * weights[:, None]).T @ grads
        H = jnp.linalg.solve(q.scale.T, B)
    return g, 0.5 * (H + H.T)


# -------------------------------------------------------------------- the steps

def jko_entropy_step(cov, step_size):
    """The backward step of FB-GVI: the JKO (proximal) step of the negative entropy.

    argmin over Gaussians q of  h * (-H(q)) + W2^2(N(m, cov), q) / 2  keeps the mean and has
    covariance 1/2 (cov + 2hI + (cov (cov + 4hI))^{1/2}) [Diao2023, eq. (5), Appendix A].
    Computed on the spectrum of ``cov`` (symmetric PSD, shape (d, d); tiny negative
    rounding is clipped): eigenvalue s -> ((sqrt(s) + sqrt(s + 4h)) / 2)^2 >= h.

    Returns ``(scale, min_eigenvalue)``: the symmetric square root of the new covariance
    and its smallest eigenvalue.
    """
    s, vecs = jnp.linalg.eigh(0.5 * (cov + cov.T))
    s = jnp.clip(s, 0.0)
    root = 0.5 * (jnp.sqrt(s) + jnp.sqrt(s + 4.0 * step_size))
    return (vecs * root) @ vecs.T, jnp.min(root) ** 2


def _fb_update(q, g, H, h):
    """One FB-GVI step [Diao2023, eqs. (4)-(5)] from the estimates g ~ E_q[grad V],
    H ~ E_q[hess V]: returns (mean, symmetric scale, min eigenvalue of the covariance)."""
    eye = jnp.eye(q.dim, dtype=q.mean.dtype)
    forward = (eye - h * H) @ q.scale  # Sigma' = forward @ forward.T = M Sigma M
    scale, min_eig = jko_entropy_step(forward @ forward.T, h)
    return q.mean - h * g, scale, min_eig


def _transition(config: _Config, key, state: VIState, batch, step_size):
    """One FB-GVI / BW-GD step of size ``step_size`` (traced).

    ``rule="fixed"``: ``step_size`` is h. ``"curvature"``: it is an upper bound h_0 and the
    step uses h = min(h_0, c / ||H||_2) with H the E_q[hess V] estimate of this very step.
    ``"backtracking"``: it is an upper bound h_max; see :func:`_backtracking_step`."""
    q = state.position
    d = q.dim
    dtype = q.mean.dtype
    h = jnp.asarray(step_size, dtype)
    potential_fn = lambda x: -_call(config.logdensity_fn, x, batch)  # noqa: E731
    if config.rule == "backtracking":
        u, w = _standard_nodes(key, d, dtype, config.expectation, config.num_samples,
                               config.num_points, config.antithetic)
        return _backtracking_step(potential_fn, state, u, w, config.hessian, h)
    if callable(config.expectation):
        g, H = config.expectation(key, q) if batch is None else config.expectation(key, q, batch)
    else:
        u, w = _standard_nodes(key, d, dtype, config.expectation, config.num_samples,
                               config.num_points, config.antithetic)
        g, H = expected_grad_hess(potential_fn, q, u, w, config.hessian)
    if config.rule == "curvature":  # h * ||H||_2 <= c <= 1: the forward step's stability condition
        norm = jnp.max(jnp.abs(jnp.linalg.eigvalsh(H)))
        h = jnp.where(h * norm > DEFAULT_STEP_FACTOR, DEFAULT_STEP_FACTOR / norm, h)
    if config.method == "bwgd":  # [Diao2023, eq. (3)]: explicit step on E[V] - H together
        eye = jnp.eye(d, dtype=dtype)
        scale_inv = jnp.linalg.inv(q.scale)
        M = eye - h * (H - scale_inv.T @ scale_inv)
        scale = M @ q.scale
        min_eig = jnp.min(jnp.linalg.eigvalsh(scale @ scale.T))
        mean = q.mean - h * g
    else:  # forward step on E[V], then the closed-form JKO step of -H
        mean, scale, min_eig = _fb_update(q, g, H, h)
    new = state._replace(position=Gaussian(mean, scale))
    return new, VIInfo(min_eig, jnp.linalg.norm(g), h, jnp.zeros((), jnp.int32))


def _fixed_kernel(config: _Config, key, state, batch, params: StepSize):
    """``kernel(key, state, batch, params)`` of the "fixed" rule: h = ``params.step_size``."""
    return _transition(config, key, state, batch, params.step_size)


def _adaptive_step(config: _Config, max_step_size, key, state, batch=None):
    """``step(key, state, batch=None)`` of the adaptive rules: h_k chosen below the ceiling
    ``max_step_size``, or below h_0 (``state.step_size``) when that is None."""
    ceiling = state.step_size if max_step_size is None else max_step_size
    return _transition(config, key, state, batch, ceiling)


def _backtracking_step(potential_fn, state, u, w, hessian, h_max):
    """One FB-GVI step whose h is chosen by backtracking on the smoothness inequality.

    Nodes X_i = m + C u_i (weights w_i) give V_i, grad V_i and the estimates g, H of
    E_q[grad V], E_q[hess V] once; the trial step size starts at

        h = min(2 h_{k-1}, 1 / ||H||_2, h_max)

    and is halved until the candidate q+ = N(m+, C+ C+^T) of [Diao2023, eqs. (4)-(5)] is finite
    and, with X_i+ = m+ + C+ u_i (common random numbers: the same u_i),

        sum_i w_i [V(X_i+) - V(X_i) - <grad V(X_i), X_i+ - X_i> - |X_i+ - X_i|^2 / (2h)] <= 0

    (up to floating-point round-off of the V values). This is the descent lemma of a
    (1/h)-smooth V, checked along the coupling (X_i, X_i+) of q and q+: it holds for every
    h <= 1/beta when V is beta-smooth, which is where [Diao2023, Theorem 3.2] uses h <= 1/beta,
    so the test never cuts h below 1/(2 beta) ([Beck2009]'s backtracking rule for
    proximal gradient, moved to the Bures-Wasserstein space). The cap 1/||H||_2 keeps the
    best Gaussian a fixed point: with Sigma^{-1} = E_q[hess V] and h ||E_q[hess V]|| <= 1 the
    step maps q* to itself (its eigenvalue map has fixed point 1/lambda iff h lambda <= 1;
    docs/vi.md). If ``MAX_BACKTRACKS`` halvings all fail, q stays where it is.
    """
    q = state.position
    dtype = q.mean.dtype
    x = q.mean + u @ q.scale.T
    vals, grads = jax.vmap(jax.value_and_grad(potential_fn))(x)
    g = w @ grads
    if hessian == "exact":
        H = jnp.einsum("n,nij->ij", w, jax.vmap(jax.hessian(potential_fn))(x))
    else:
        H = jnp.linalg.solve(q.scale.T, (u * w[:, None]).T @ grads)
    H = 0.5 * (H + H.T)
    norm = jnp.max(jnp.abs(jnp.linalg.eigvalsh(H)))
    h0 = jnp.minimum(jnp.minimum(BACKTRACK_GROWTH * state.last_step_size, h_max), 1.0 / norm)
    h0 = jnp.where(jnp.isfinite(h0) & (h0 > 0), h0, jnp.minimum(state.last_step_size, h_max))
    eps = jnp.finfo(dtype).eps

    def trial(h):
        mean, scale, min_eig = _fb_update(q, g, H, h)
        xn = mean + u @ scale.T
        vn = jax.vmap(potential_fn)(xn)
        delta = xn - x
        excess = w @ (vn - vals - jnp.sum(grads * delta, axis=1)
                      - jnp.sum(delta**2, axis=1) / (2.0 * h))
        slack = ROUNDOFF_SLACK * eps * (w @ (jnp.abs(vn) + jnp.abs(vals)))
        ok = (jnp.isfinite(excess) & (excess <= slack) & jnp.all(jnp.isfinite(mean))
              & jnp.all(jnp.isfinite(scale)))
        return ok, mean, scale, min_eig

    def cond(carry):
        i, _, ok, *_ = carry
        return (~ok) & (i < MAX_BACKTRACKS)

    def body(carry):
        i, h, *_ = carry
        h = h * BACKTRACK_SHRINK
        return (i + 1, h, *trial(h))

    i, h, ok, mean, scale, min_eig = jax.lax.while_loop(cond, body, (0, h0, *trial(h0)))
    mean = jnp.where(ok, mean, q.mean)
    scale = jnp.where(ok, scale, q.scale)
    min_eig = jnp.where(ok, min_eig, jnp.min(jnp.linalg.eigvalsh(q.cov)))
    new = state._replace(position=Gaussian(mean, scale), last_step_size=h.astype(dtype))
    return new, VIInfo(min_eig, jnp.linalg.norm(g), h, jnp.asarray(i, jnp.int32))


def _step_rule(step_size, method, expectation):
    """(rule, fixed h or None) from the ``step_size`` argument, validated."""
    if step_size is None and method == "fb":
        step_size = DEFAULT_STEP_RULE
    if isinstance(step_size, str):
        if method != "fb":
            raise TypeError(f"step_size must be a positive number for BW-GD (it has no "
                            f"adaptive rule), got {step_size!r}")
        if step_size not in STEP_RULES:  # a type mistake as much as a value one
            raise TypeError(f"step_size must be a positive number or one of "
                            f"{', '.join(map(repr, STEP_RULES))}, got {step_size!r}")
        if step_size == "backtracking" and callable(expectation):
            raise ValueError("step_size='backtracking' evaluates logdensity_fn at the "
                             "expectation's nodes, which a callable expectation does not "
                             "expose; pass a number or step_size='curvature'")
        return step_size, None
    check_positive("step_size", step_size)
    return "fixed", float(step_size)


def _build(logdensity_fn, step_size, method, name, expectation, num_samples, num_points,
           hessian, dim, antithetic=False, max_step_size=None):
    _check_logdensity(logdensity_fn, dim)
    if not callable(expectation):
        check_choice("expectation", expectation, EXPECTATIONS)
    rule, h = _step_rule(step_size, method, expectation)
    check_choice("hessian", hessian, HESSIANS)
    num_samples = check_int("num_samples", num_samples)
    num_points = check_int("num_points", num_points)
    if antithetic is None:
        antithetic = expectation == "monte_carlo" and num_samples % 2 == 0 and method == "fb" \
            and name == "fbgvi"
    antithetic = check_bool("antithetic", antithetic)
    if antithetic and (expectation != "monte_carlo" or num_samples % 2):
        raise ValueError("antithetic=True pairs each Monte Carlo draw with its negative: it "
                         "needs expectation='monte_carlo' and an even num_samples, got "
                         f"expectation={expectation!r}, num_samples={num_samples}")
    if max_step_size is not None:
        if rule != "backtracking":
            raise ValueError("max_step_size bounds the 'backtracking' rule only; got "
                             f"step_size={step_size!r}")
        if max_step_size != math.inf:  # inf: no ceiling
            check_positive("max_step_size", max_step_size)
    if expectation == "exact_gaussian" and hessian == "stein":
        raise ValueError("hessian='stein' needs random or quadrature nodes; with "
                         "expectation='exact_gaussian' use hessian='exact'")
    if expectation == "gauss_hermite" and dim is not None and num_points**dim > MAX_QUADRATURE_NODES:
        raise ValueError(f"expectation='gauss_hermite' with num_points={num_points} in dim={dim} "
                         f"needs {num_points}**{dim} nodes (> {MAX_QUADRATURE_NODES}); use "
                         "'monte_carlo' or fewer points")
    if rule != "fixed" and _takes_batch(logdensity_fn):
        raise ValueError(f"{name} with step_size={step_size!r} chooses the step from the "
                         "Hessian of logdensity_fn(x) at q0.mean, but this logdensity_fn needs "
                         "a minibatch (it takes (x, batch)); pass step_size explicitly")
    config = _Config(logdensity_fn, method, expectation,
                     num_samples if expectation == "monte_carlo" else 0,
                     num_points if expectation == "gauss_hermite" else 0, hessian, rule,
                     antithetic)
    h_max = None if max_step_size is None else float(max_step_size)
    init = Bound(_init, (config, dim, h_max))
    if rule == "fixed":  # the step size is a traced parameter: a new one compiles nothing
        params = StepSize(jnp.asarray(h, jnp.result_type(float)))
        kernel = Bound(_fixed_kernel, (config,))
        return Algorithm(init, with_params(kernel, params), kernel, params, name)
    return Algorithm(init, Bound(_adaptive_step, (config, h_max)), name=name)


def fbgvi(logdensity_fn: Callable, step_size=None, *,
          expectation: str = "monte_carlo",
          num_samples: int = 32, num_points: int = 3, hessian: str = "exact",
          antithetic: Optional[bool] = None, max_step_size: Optional[float] = None,
          dim: Optional[int] = None) -> Algorithm:
    """Forward-backward Gaussian VI [Diao2023, Algorithm 1; update eqs. (4)-(5)].

    On an alpha-strongly log-concave, beta-log-smooth target with h <= 1/beta,
    W2^2(q_k, q*) <= (1 - alpha h)^k W2^2(q_0, q*) [Diao2023, Theorem 3.2] (q* the best
    Gaussian, = pi for a Gaussian pi). For h > 1/beta the iterates stay SPD but can converge
    to a biased covariance (on a Gaussian: h/(2 - h lambda) instead of 1/lambda for
    eigenvalues lambda of the precision with 1 < h lambda < 2), and on a non-log-concave
    target a fixed large h can send the iterates to NaN (``samplers.run`` raises a
    ``NonFiniteError`` naming the step, or flags it with ``on_nonfinite="flag"``).

    Args:
      logdensity_fn: ``x (d,) -> scalar`` log pi(x) up to a constant (V = -logdensity_fn);
        or ``(x, batch) -> scalar`` when run with minibatches (``samplers.run(...,
        batches=...)``; recognised by its signature: a second positional parameter).
      step_size: h > 0 (a fixed step), or the name of an adaptive rule; both rules start
        from h_0 = 1 / L_0, L_0 = ||hess log pi(m_0)||_2 at the initial mean
        (:func:`default_step_size`; ``state.step_size`` after ``init``,
        ``trace.final_state.step_size`` after a run), and record each step's h_k in
        ``trace.stats["step_size"]``:

        * ``"backtracking"`` (the default, ``None``): h_k is the largest of
          min(2 h_{k-1}, 1/||H_k||_2, h_max) times 2^-j (h_max = ``max_step_size``, by
          default h_0), j = 0, 1, ..., for
          which the step's candidate is finite and passes the descent-lemma test
          E[V(X+) - V(X) - <grad V(X), X+ - X>] <= E|X+ - X|^2 / (2h) on this step's own
          draws X_i and their images X_i+ under the candidate (common random numbers);
          H_k is the step's E_q[hess V] estimate. The test holds whenever h <= 1/beta, so h
          is never cut below 1/(2 beta); the cap 1/||H_k||_2 keeps the best Gaussian a fixed
          point. See :func:`_backtracking_step`; ``info.num_backtracks`` counts halvings.
        * ``"curvature"`` (the default before): h_k = min(h_0, 1/||H_k||_2), no test.
      expectation: "monte_carlo" (``num_samples`` fresh draws per step), "gauss_hermite"
        (``num_points`` per coordinate, num_points**d nodes, small d only),
        "exact_gaussian" (grad and Hessian at the mean: exact for a Gaussian target), or a
        callable ``(key, q) -> (E_q[grad V] (d,), E_q[hess V] (d, d))`` (``(key, q, batch)``
        with minibatches) for targets whose Gaussian expectations have a closed form or a
        cheap quadrature (e.g. a GLM, where they are one-dimensional integrals; not with
        "backtracking", whose test needs V at the nodes).
      num_samples: Monte Carlo draws per step.
      num_points: Gauss-Hermite points per coordinate.
      hessian: "exact" (``jax.hessian``) or "stein" (gradient-only, Stein's lemma).
      antithetic: Monte Carlo draws in pairs u, -u (``num_samples`` even): unbiased, and the
        noise term linear in u cancels, which on a nearly Gaussian target removes most of
        the O(h / num_samples) noise floor (docs/vi.md, measured: German credit 0.035 sd
        instead of 0.15-0.2). None (default): True for ``expectation="monte_carlo"`` with
        an even ``num_samples``, else False.
      max_step_size: the ceiling on h_k for "backtracking" (default None: h_0 = 1/L_0, so
        the rule never steps further than the theorem's condition at the start; ``inf``
        lets h grow as far as the cap and the test allow; give 1/beta when beta is known).
      dim: the target's dimension, checked against ``q0`` in ``init`` (optional).

    Returns:
      a :class:`samplers.Algorithm` whose state (:class:`VIState`) has the current Gaussian
      as its ``position``; its info is :class:`VIInfo`. With a fixed step size,
      ``algorithm.params`` is a ``StepSize`` (traced: a new step size compiles nothing) and
      ``algorithm.kernel`` takes it; an adaptive rule is in ``step`` alone
      (``algorithm.params`` None). Run it with
      ``samplers.run(key, algorithm, vi.Gaussian.standard(d), num_steps)`` or :func:`fit`.
    """
    return _build(logdensity_fn, step_size, "fb", "fbgvi", expectation, num_samples,
                  num_points, hessian, dim, antithetic, max_step_size)


def sfbgvi(logdensity_fn: Callable, step_size=None, *, num_samples: int = 1,
           hessian: str = "exact", antithetic: Optional[bool] = False,
           max_step_size: Optional[float] = None, dim: Optional[int] = None) -> Algorithm:
    """Stochastic FB-GVI [Diao2023, Algorithm 2]: the FB-GVI step with E_q[grad V] and
    E_q[hess V] replaced by their values at ``num_samples`` fresh draws X ~ q (one by
    default). With minibatches (``samplers.run(..., batches=...)``), ``logdensity_fn(x, batch)``
    must be an unbiased estimate of log pi(x) (see :func:`minibatch_logdensity`).

    Guarantee [Diao2023, Theorem 3.4]: for alpha-strongly convex, beta-smooth V and
    h <= 1/beta, linear convergence at rate (1 - alpha h) to a neighbourhood of q* whose
    size in expected W2^2 is O(h). On N(mu, A^{-1}) with the exact Hessian (constant) the
    covariance is deterministic and the mean is an AR(1) process whose stationary
    E|m - mu|^2 is exactly h tr((2I - hA)^{-1}) (tested).

    ``step_size``: a number, or a rule as in :func:`fbgvi` (default "backtracking"; both
    rules need the full log-density ``logdensity_fn(x)`` at ``init``; with a minibatch
    log-density pass a number).
    """
    return _build(logdensity_fn, step_size, "fb", "sfbgvi", "monte_carlo", num_samples, 1,
                  hessian, dim, antithetic, max_step_size)


def bwgd(logdensity_fn: Callable, step_size: float, *, expectation: str = "monte_carlo",
         num_samples: int = 32, num_points: int = 3, hessian: str = "exact",
         dim: Optional[int] = None) -> Algorithm:
    """Bures-Wasserstein gradient descent [Lambert2022; Diao2023, eq. (3)].

    m' = m - h E_q[grad V];  Sigma' = M Sigma M, M = I - h (E_q[hess V] - Sigma^{-1}).
    The entropy is stepped explicitly, so Sigma' is SPD only while M is nonsingular: on a
    Gaussian target it cycles at h lambda_max = 1 and diverges above (tested). The stored
    factor is ``M @ scale``. Arguments as in :func:`fbgvi`.
    """
    return _build(logdensity_fn, step_size, "bwgd", "bwgd", expectation, num_samples,
                  num_points, hessian, dim)


# ---------------------------------------------------------------- reparameterised VI

def _softplus_inv(x):
    return x + jnp.log(-jnp.expm1(-x))


def _chol_from_raw(raw):
    return jnp.tril(raw, -1) + jnp.diag(jax.nn.softplus(jnp.diag(raw)))


def _reparam_loss(logdensity_fn, unconstrained, u, batch):
    """Minus the ELBO estimate -(mean_i log p(m + L u_i) + sum log L_ii) (+ const)."""
    mean, raw = unconstrained
    chol = _chol_from_raw(raw)
    x = mean + u @ chol.T
    logp = jax.vmap(lambda xi: _call(logdensity_fn, xi, batch))(x)
    return -(jnp.mean(logp) + jnp.sum(jnp.log(jnp.diag(chol))))


def _reparam_kernel(logdensity_fn, transform, num_samples, key, state, batch, params):
    """One optimiser step on the reparameterised ELBO. ``params``: a :class:`StepSize`
    (the learning rate, traced: ``transform`` is then Adam's direction, scaled here by
    -step_size as ``optax.adam`` does), or None (``transform`` is the user's optimiser)."""
    mean, _ = state.unconstrained
    u = jax.random.normal(key, (num_samples, mean.shape[0]), mean.dtype)
    grads = jax.grad(functools.partial(_reparam_loss, logdensity_fn))(state.unconstrained, u,
                                                                       batch)
    updates, opt_state = transform.update(grads, state.opt_state, state.unconstrained)
    if params is not None:
        updates = jax.tree.map(lambda du: -params.step_size * du, updates)
    unconstrained = jax.tree.map(lambda p, du: p + du, state.unconstrained, updates)
    chol = _chol_from_raw(unconstrained[1])
    gnorm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
    info = ReparamInfo(jnp.min(jnp.linalg.eigvalsh(chol @ chol.T)), gnorm)
    return VIState(Gaussian(unconstrained[0], chol), unconstrained=unconstrained,
                   opt_state=opt_state), info


def _reparam_step(logdensity_fn, optimizer, num_samples, key, state, batch=None):
    """``step`` of :func:`reparam_vi` with the user's optimiser (compiled in)."""
    return _reparam_kernel(logdensity_fn, optimizer, num_samples, key, state, batch, None)


def _reparam_init(logdensity_fn, dim, transform, q0, key=None) -> VIState:
    """``init(q0, key=None)`` of :func:`reparam_vi`: the validated start, its Cholesky
    factor's unconstrained form and the optimiser's state."""
    del key
    q0 = _start(logdensity_fn, dim, q0)
    chol = jnp.linalg.cholesky(q0.cov)
    raw = jnp.tril(chol, -1) + jnp.diag(_softplus_inv(jnp.diag(chol)))
    unconstrained = (q0.mean, raw)
    return VIState(Gaussian(q0.mean, chol), unconstrained=unconstrained,
                   opt_state=transform.init(unconstrained))


@functools.lru_cache(maxsize=1)
def _adam_direction():
    """Adam's update direction (``optax.scale_by_adam`` with its defaults), built once so
    that every :func:`reparam_vi` shares it (and ``samplers.run``'s compiled program)."""
    import optax

    return optax.scale_by_adam()


def reparam_vi(logdensity_fn: Callable, optimizer=None, *, step_size: float = 1e-2,
               num_samples: int = 1, dim: Optional[int] = None) -> Algorithm:
    """Reparameterisation-gradient Gaussian VI (the "ADVI full-rank" baseline of [Diao2023]).

    Maximises the ELBO E[log p(m + L u)] + sum log L_ii + const over the mean m and a
    lower-triangular L with softplus diagonal (SPD by construction), estimating the gradient
    with ``num_samples`` draws u ~ N(0, I) per step [Titsias2014], with
    an optax ``optimizer``. By default Adam with learning rate ``step_size``, which is then
    a traced parameter (``algorithm.params``: a new one compiles nothing); a given
    ``optimizer`` is compiled in, its learning rate with it.

    Returns:
      a :class:`samplers.Algorithm` whose state (:class:`VIState`) has the current
      Gaussian as its ``position`` (``scale`` its Cholesky factor) and whose info is
      :class:`ReparamInfo`: ``samplers.run(key, vi.reparam_vi(fn), q0, num_steps)``.
    """
    _check_logdensity(logdensity_fn, dim)
    check_positive("step_size", step_size)
    num_samples = check_int("num_samples", num_samples)
    if optimizer is not None and not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got "
                        f"{type(optimizer).__name__}")
    if optimizer is not None:
        init = Bound(_reparam_init, (logdensity_fn, dim, optimizer))
        return Algorithm(init, Bound(_reparam_step, (logdensity_fn, optimizer, num_samples)),
                         name="reparam_vi")
    direction = _adam_direction()
    params = StepSize(jnp.asarray(step_size, jnp.result_type(float)))
    kernel = Bound(_reparam_kernel, (logdensity_fn, direction, num_samples))
    return Algorithm(Bound(_reparam_init, (logdensity_fn, dim, direction)),
                     with_params(kernel, params), kernel, params, "reparam_vi")


# ------------------------------------------------------------------------ helpers

def minibatch_logdensity(logprior_fn: Callable, loglik_fn: Callable, data_size: int) -> Callable:
    """``(x, batch) -> log prior(x) + (N / n) sum_{i in batch} loglik(x, datum_i)``, an
    unbiased estimate of log pi(x) from a minibatch of n of the N data (for :func:`sfbgvi`)."""
    data_size = check_int("data_size", data_size)

    def logdensity_fn(x, batch):
        lik = jax.vmap(loglik_fn, in_axes=(None, 0))(x, batch)
        return logprior_fn(x) + data_size / lik.shape[0] * jnp.sum(lik)

    return logdensity_fn


def ravel_logdensity(logdensity_fn: Callable, position) -> tuple[Callable, jax.Array, Callable]:
    """Flatten a log-density over a pytree (a NumPyro model's dict of unconstrained sites,
    from ``samplers.numpyro.logdensity``) into one over R^d.

    Returns ``(flat_logdensity_fn, flat_position (d,), unravel_fn)``.
    """
    flat, unravel = jax.flatten_util.ravel_pytree(position)
    return (lambda x: logdensity_fn(unravel(x))), flat, unravel


def fit(key, algorithm: Algorithm, q0: Gaussian, num_steps: int,
        **run_options) -> tuple[Gaussian, Trace]:
    """One VI run through :func:`samplers.run`: the final Gaussian and the trace.

    ``q, trace = vi.fit(key, vi.fbgvi(logdensity_fn), q0, 500)`` is
    ``trace = samplers.run(key, algorithm, q0, 500, **run_options)`` (one chain) with
    ``q = trace.final_state.position`` without its chain axis, after ``q0`` was checked
    outside ``jit`` (finite, symmetric positive definite: a ValueError here, where inside
    ``run`` the same check stops the compiled program with a ``jax.errors.JaxRuntimeError``). ``run_options`` are :func:`samplers.run`'s (``thin``, ``batches``,
    ``on_nonfinite``, ``progress``, ``checkpoint``, ...); ``trace.positions`` holds the
    Gaussian after every ``thin``-th step, (1, num_steps // thin) leading axes.
    """
    for option in ("num_chains", "chain_axis", "mesh"):
        if option in run_options:
            raise ValueError(f"fit runs one chain and returns its Gaussian; for {option} use "
                             "samplers.run(key, algorithm, q0, num_steps, ...)")
    if isinstance(q0, Gaussian):
        check_gaussian("q0", as_float(q0))
    trace = run(key, algorithm, q0, num_steps, **run_options)
    return jax.tree.map(lambda x: x[0], trace.final_state.position), trace


def elbo(key, logdensity_fn: Callable, q: Gaussian, num_draws: int = 64) -> jax.Array:
    """ELBO estimates E_q[log p] + H(q) (= log Z - KL(q || pi)) of every Gaussian in ``q``.

    ``q`` may carry leading axes, e.g. a run's ``trace.positions`` (chain, draw); the result
    has those axes. H(q) = 1/2 log det(2 pi e Sigma) is exact; E_q[log p] averages
    ``logdensity_fn`` (``x (d,) -> scalar``) over X_i = m + C u_i with ``num_draws`` draws
    u_i ~ N(0, I) shared by all the Gaussians (common random numbers: a smooth curve over a
    trace).
    """
    num_draws = check_int("num_draws", num_draws)
    u = jax.random.normal(key, (num_draws, q.mean.shape[-1]), q.mean.dtype)
    return _elbo(logdensity_fn, q, u)


@functools.partial(jax.jit, static_argnums=0)
def _elbo(logdensity_fn, q, u):
    x = q.mean[..., None, :] + jnp.einsum("...ij,nj->...ni", q.scale, u)
    flat = x.reshape((-1,) + x.shape[-2:])
    logp = jax.vmap(jax.vmap(logdensity_fn))(flat).reshape(x.shape[:-1])
    return jnp.mean(logp, axis=-1) + q.entropy()

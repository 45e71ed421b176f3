"""Forward-backward Gaussian VI in the Bures-Wasserstein space, and its baselines.

Reference: M. Z. Diao, K. Balasubramanian, S. Chewi, A. Salim, "Forward-backward Gaussian
variational inference via JKO in the Bures-Wasserstein space", ICML 2023, arXiv 2304.05398
(cited below as [DBCS23]).

Target pi ∝ exp(-V) with V = -logdensity_fn. Over Gaussians q = N(m, Sigma),
KL(q || pi) = E_q[V] - H(q) + log Z. One FB-GVI step of size h ([DBCS23], Algorithm 1):

* forward (Bures-Wasserstein gradient step on the potential energy E_q[V]):
  m' = m - h E_q[grad V],  Sigma' = M Sigma M  with  M = I - h E_q[hess V];
* backward (JKO / proximal step on the negative entropy, closed form, [DBCS23] eq. (5)):
  Sigma_next = 1/2 (Sigma' + 2hI + (Sigma' (Sigma' + 4hI))^{1/2}),  m_next = m'.

Expectations under q are computed as ``expectation=`` "exact_gaussian" (evaluate at the
mean: exact when V is quadratic, i.e. a Gaussian target), "gauss_hermite" (tensor-product
Gauss-Hermite quadrature, exact for polynomials of degree < 2 * num_points per coordinate)
or "monte_carlo" (``num_samples`` fresh draws each step; stochastic FB-GVI, [DBCS23]
Algorithm 2, is the one-draw case). Hessians are either exact (``jax.hessian``) or, with
``hessian="stein"``, estimated from gradients only by Stein's lemma
E[hess V(X)] = E[Sigma^{-1} (X - m) grad V(X)^T] = C^{-T} E[u grad V(m + C u)^T] for
Sigma = C C^T, u ~ N(0, I) (symmetrised).

**SPD by construction.** The backward map acts on the spectrum of Sigma' alone
(Sigma' and Sigma' + 4hI commute): each eigenvalue s >= 0 goes to
((sqrt(s) + sqrt(s + 4h)) / 2)^2 >= h. We store the symmetric square root
U diag((sqrt(s) + sqrt(s + 4h)) / 2) U^T, so every covariance an FB-GVI step returns has
all eigenvalues >= h, even if Sigma' is singular (it is when h equals 1/lambda for an
eigenvalue lambda of the Hessian; tiny negative rounding in s is clipped to 0).

Baselines: :func:`bwgd`, Bures-Wasserstein gradient descent of Lambert, Chewi, Bach,
Bonnabel, Rigollet (NeurIPS 2022), the explicit step on the whole KL,
M = I - h (E[hess V] - Sigma^{-1}) ([DBCS23] eq. (3)); and :func:`reparam_vi`, the
reparameterisation-gradient ELBO maximisation over (m, Cholesky factor) with an optax
optimiser (Titsias & Lazaro-Gredilla 2014; Kucukelbir et al. 2017).
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from samplers.base import as_float
from samplers.validation import check_positive, check_scalar_logdensity
from samplers.data import Minibatches
from samplers.run import NonFiniteError

from .gaussian import Gaussian, check_gaussian

__all__ = [
    "VIAlgorithm", "VIState", "VIInfo", "VITrace", "fbgvi", "sfbgvi", "bwgd", "reparam_vi",
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
    """State of a Gaussian VI algorithm.

    Attributes:
      q: the current :class:`Gaussian`.
      params: the unconstrained parameters (reparameterised VI: (mean, raw Cholesky)); None
        for FB-GVI and BW-GD, whose parameters are ``q`` itself.
      opt_state: the optax state (reparameterised VI) or None.
      step_size: with an adaptive rule (``step_size=None``, "backtracking" or "curvature"),
        h_0, the step chosen at ``init`` from the target's curvature at ``q0``
        (:func:`default_step_size`), which is also the rule's ceiling unless
        ``max_step_size`` was given; None when the algorithm has a fixed step size.
      last_step_size: "backtracking" only: the last accepted h_k (the next step tries
        twice it first); None otherwise.
    """

    q: Gaussian
    params: Any = None
    opt_state: Any = None
    step_size: Any = None
    last_step_size: Any = None


class VIInfo(NamedTuple):
    """Per-step statistics.

    Attributes:
      min_eigenvalue: smallest eigenvalue of the new covariance (FB-GVI: >= step size).
      grad_norm: |E_q[grad V]| as estimated this step (reparameterised VI: the loss gradient norm).
      step_size: the step size this step used (FB-GVI and BW-GD; with
        ``step_size="curvature"`` it is h_k = c / max(L_0, ||E_q[hess V]||_2), see
        :func:`default_step_size`; with ``"backtracking"`` the accepted h_k, or the last one
        tried when every trial failed and q stayed put); None for reparameterised VI.
      num_backtracks: ``step_size="backtracking"`` only: how many times this step halved h
        before the descent test passed (``MAX_BACKTRACKS``: none passed, q unchanged); None
        otherwise.
    """

    min_eigenvalue: jax.Array
    grad_norm: jax.Array
    step_size: Any = None
    num_backtracks: Any = None


class VITrace(NamedTuple):
    """What :meth:`VIAlgorithm.run` records, one row per recorded step.

    Attributes:
      mean: (T, d) means; cov: (T, d, d) covariances, after steps ``record_every * (t+1)``.
      elbo: (T,) ELBO estimates E_q[log p] + H(q) (exact entropy, E_q[log p] by a fixed set
        of draws, common to all steps, so the curve is smooth); NaN when not computed.
      info: :class:`VIInfo` with a leading (T,) axis.
      nonfinite_step: first recorded step (1-based step count) whose state is not finite; -1.
      step_size: the step size the run used (the one chosen at ``init`` when the algorithm
        was built with ``step_size=None``).
    """

    mean: jax.Array
    cov: jax.Array
    elbo: jax.Array
    info: Any
    nonfinite_step: int
    step_size: Optional[float] = None

    def kl_to(self, mean, cov) -> np.ndarray:
        """(T,) exact KL(q_t || N(mean, cov)) for a Gaussian reference (float64 numpy)."""
        ms, cs = np.asarray(self.mean, np.float64), np.asarray(self.cov, np.float64)
        return np.array([_kl_np(m, c, mean, cov) for m, c in zip(ms, cs)])

    def w2_squared_to(self, mean, cov) -> np.ndarray:
        """(T,) exact W2^2(q_t, N(mean, cov)) for a Gaussian reference (float64 numpy)."""
        ms, cs = np.asarray(self.mean, np.float64), np.asarray(self.cov, np.float64)
        return np.array([_w2sq_np(m, c, mean, cov) for m, c in zip(ms, cs)])


def _kl_np(m0, S0, m1, S1) -> float:
    m0, S0, m1, S1 = (np.asarray(a, np.float64) for a in (m0, S0, m1, S1))
    if not (np.all(np.isfinite(m0)) and np.all(np.isfinite(S0))):
        return float("nan")
    sign, logdet0 = np.linalg.slogdet(S0)
    if sign <= 0:
        return float("inf")
    logdet1 = np.linalg.slogdet(S1)[1]
    diff = m1 - m0
    return 0.5 * (logdet1 - logdet0 - m0.size + np.trace(np.linalg.solve(S1, S0))
                  + diff @ np.linalg.solve(S1, diff))


def _w2sq_np(m0, S0, m1, S1) -> float:
    m0, S0, m1, S1 = (np.asarray(a, np.float64) for a in (m0, S0, m1, S1))
    if not (np.all(np.isfinite(m0)) and np.all(np.isfinite(S0))):
        return float("nan")
    s, u = np.linalg.eigh(S1)
    root = (u * np.sqrt(np.clip(s, 0, None))) @ u.T
    inner = root @ S0 @ root
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (inner + inner.T)), 0, None)))
    return float(np.sum((m0 - m1) ** 2) + np.trace(S0) + np.trace(S1) - 2.0 * cross)


class VIAlgorithm(NamedTuple):
    """A Gaussian VI algorithm: pure ``init``/``step`` functions and a driver ``run``.

    Attributes:
      init: ``init(q0, key=None) -> VIState`` (validates ``q0`` when concrete).
      step: ``step(key, state, batch=None) -> (VIState, VIInfo)``.
      kernel: ``kernel(key, state, batch, step_size)``: ``step`` with a traceable step size
        (None for :func:`reparam_vi`, whose optimiser owns its learning rate).
      step_size: the step size ``step`` uses; None when an adaptive rule chooses it (its
        start, from the target's curvature at ``q0``, is then ``state.step_size``).
      name: "fbgvi", "sfbgvi", "bwgd" or "reparam_vi".
      logdensity_fn: the target's log-density (used for the ELBO in ``run``).
      dim: the dimension the target expects, or None when not known.
      step_rule: "fixed", "backtracking" or "curvature" (see :func:`fbgvi`).
      max_step_size: the "backtracking" rule's ceiling h_max (None: h_0 from ``init``,
        ``state.step_size``); ``kernel``'s traceable step size is the ceiling.
    """

    init: Callable
    step: Callable
    kernel: Optional[Callable]
    step_size: Optional[float]
    name: str
    logdensity_fn: Callable
    dim: Optional[int] = None
    step_rule: str = "fixed"
    max_step_size: Optional[float] = None

    def run(self, key, q0: Gaussian, num_steps: int, *, batches: Optional[Minibatches] = None,
            record_every: int = 1, num_elbo_samples: int = 64,
            on_nonfinite: str = "raise") -> tuple[Gaussian, VITrace]:
        """Run ``num_steps`` steps from ``q0`` in one jitted ``lax.scan``.

        Args:
          key: JAX key; step t uses ``fold_in(key, t)`` (split again for its minibatch).
          q0: initial :class:`Gaussian` (validated: shape, finite, SPD).
          num_steps: positive int, a multiple of ``record_every``.
          batches: ``samplers.data.minibatches(data, n)``: a fresh minibatch per step, passed to
            ``logdensity_fn(x, batch)`` (see :func:`minibatch_logdensity`).
          record_every: keep (m, Sigma, ELBO, info) every this many steps.
          num_elbo_samples: draws for the ELBO estimate (0: no ELBO, NaN recorded).
          on_nonfinite: what to do when the Gaussian turns non-finite (a step size above
            the stability limit, BW-GD at large steps), the library's one policy:
            "raise" (default: :class:`samplers.NonFiniteError`, a FloatingPointError, naming
            the step and carrying the :class:`VITrace`) or "flag" (return; the step is in
            ``trace.nonfinite_step``, a RuntimeWarning says so, and the non-finite Gaussian
            refuses ``to_arviz``). "warn" is "flag"; "ignore" is "flag" without the warning.

        Returns:
          ``(q, trace)``: the final :class:`Gaussian` and a :class:`VITrace`.
        """
        num_steps = _positive_int("num_steps", num_steps)
        record_every = _positive_int("record_every", record_every)
        if num_steps % record_every:
            raise ValueError(f"num_steps ({num_steps}) must be a multiple of record_every "
                             f"({record_every})")
        if isinstance(num_elbo_samples, bool) or int(num_elbo_samples) != num_elbo_samples \
                or num_elbo_samples < 0:
            raise ValueError(f"num_elbo_samples must be an integer >= 0, got {num_elbo_samples!r}")
        if on_nonfinite not in ("raise", "flag", "warn", "ignore"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'flag' (or 'warn', 'ignore'), "
                             f"got {on_nonfinite!r}")
        if batches is not None and not isinstance(batches, Minibatches):
            raise TypeError("batches must come from samplers.data.minibatches(data, batch_size), "
                            f"got {type(batches).__name__}")
        state = self.init(q0)
        q0 = state.q  # validated, integer entries converted to the default float dtype
        k_run, k_elbo = jax.random.split(key)
        u_elbo = jax.random.normal(k_elbo, (int(num_elbo_samples), q0.dim), q0.mean.dtype)
        kernel = self.kernel if self.kernel is not None else _ignore_step_size(self.step)
        step_size = self.step_size if self.step_size is not None else state.step_size
        h = jnp.asarray(step_size if step_size is not None else 0.0, q0.mean.dtype)
        if self.step_rule == "backtracking" and self.max_step_size is not None:
            h = jnp.asarray(self.max_step_size, q0.mean.dtype)  # the ceiling, not h_0
        state, (mean, cov, elbo, info) = _scan(
            kernel, self.logdensity_fn, num_steps // record_every, record_every,
            state, k_run, h, u_elbo, batches)
        finite = np.asarray(jnp.all(jnp.isfinite(mean), axis=1)
                            & jnp.all(jnp.isfinite(cov), axis=(1, 2)))
        bad = -1 if finite.all() else int((np.argmin(finite) + 1) * record_every)
        reported = None if step_size is None else float(step_size)
        trace = VITrace(mean, cov, elbo, info, bad, reported)
        if bad >= 0 and on_nonfinite != "ignore":
            by = f"at step {bad}" if record_every == 1 else f"by step {bad}"
            message = (f"{self.name}: the Gaussian turned non-finite (NaN or inf) {by} "
                       f"(step size {reported}); lower the step size, or build the "
                       "algorithm with step_size='backtracking' to choose it by a "
                       "descent test every step")
            if on_nonfinite == "raise":
                raise NonFiniteError(message, trace)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return state.q, trace


@functools.lru_cache(maxsize=256)
def _ignore_step_size(step):
    return lambda key, state, batch, step_size: step(key, state, batch)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _scan(kernel, logdensity_fn, num_records, record_every, state, key, h, u_elbo, batches):
    def elbo(q, batch):
        if u_elbo.shape[0] == 0:
            return jnp.full((), jnp.nan, q.mean.dtype)
        x = q.mean + u_elbo @ q.scale.T
        logp = jax.vmap(lambda xi: _call(logdensity_fn, xi, batch))(x)
        return jnp.mean(logp) + q.entropy()

    def one(state, t):
        k = jax.random.fold_in(key, t)
        batch = None
        if batches is not None:
            k, k_batch = jax.random.split(k)
            batch = batches.sample(k_batch)
        state, info = kernel(k, state, batch, h)
        return state, (info, batch)

    def record(state, r):
        state, (info, batches_r) = jax.lax.scan(one, state, r * record_every + jnp.arange(record_every))
        last = jax.tree.map(lambda a: a[-1], (info, batches_r))
        q = state.q
        return state, (q.mean, q.cov, elbo(q, last[1]), last[0])

    return jax.lax.scan(record, state, jnp.arange(num_records))


def _call(logdensity_fn, x, batch):
    return logdensity_fn(x) if batch is None else logdensity_fn(x, batch)


# ---------------------------------------------------------------------- validation

def _positive_int(name, value, minimum=1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_logdensity(logdensity_fn, dim):
    if not callable(logdensity_fn):
        raise TypeError(f"logdensity_fn must be callable, got {type(logdensity_fn).__name__}")
    if dim is not None:
        _positive_int("dim", dim)


def _takes_batch(err: ValueError) -> bool:
    """Whether a failed shape check says that the log-density wants a minibatch too."""
    cause = str(err.__cause__ or "")
    return isinstance(err.__cause__, TypeError) and (
        "batch" in cause or "positional argument" in cause)


def _make_init(logdensity_fn, dim, name, params_fn=None, choose_step=False):
    """``init(q0, key=None)``: validate ``q0`` against the target and build the state.

    Integer or boolean entries of ``q0`` are converted to the default float dtype (the
    library's rule for integer input, :func:`samplers.base.as_float`). With
    ``choose_step``, the state carries the step size :func:`default_step_size` picks at q0.
    """

    def init(q0, key=None):
        del key
        if isinstance(q0, Gaussian):
            q0 = as_float(q0)
        check_gaussian("q0", q0, dim)
        batched = False
        if not isinstance(q0.mean, jax.core.Tracer):
            expected = None if dim is None else f"({dim},)"
            try:
                check_scalar_logdensity("logdensity_fn", logdensity_fn, q0.mean,
                                        position_name="q0", given=f"has dimension {q0.dim}",
                                        expected_shape=expected)
            except ValueError as err:  # minibatch log-densities need a batch: checked in step
                if not _takes_batch(err):
                    raise
                batched = True
        if params_fn is not None:
            return params_fn(q0)
        if not choose_step:
            return VIState(q0)
        if batched:
            raise ValueError(f"{name} with step_size=None chooses the step from the Hessian "
                             "of logdensity_fn(x) at q0.mean, but this logdensity_fn needs a "
                             "minibatch; pass step_size explicitly")
        return VIState(q0, step_size=default_step_size(logdensity_fn, q0))

    return init


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
    50 Hessian-vector power iterations). [DBCS23] Theorems 3.2-3.4 need h <= 1/beta for a
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
    ValueError when L_0 is not finite or is zero at ``q0.mean`` (then give ``step_size``).
    """
    check_positive("factor", factor)
    if float(factor) > 1.0:
        raise ValueError(f"factor must lie in (0, 1] (the stability condition h <= 1/L), "
                         f"got {factor!r}")
    L = _curvature(logdensity_fn, q0.mean)
    if isinstance(L, jax.core.Tracer):
        return factor / L
    L = float(L)
    if not (math.isfinite(L) and L > 0):
        raise ValueError(f"step_size=None chooses h = {factor} / L from the curvature L of "
                         f"logdensity_fn at q0.mean, but L = {L} there (the Hessian is "
                         "not finite, or zero); pass step_size explicitly")
    return factor / L


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
    noise of E_q[grad V] on a nearly Gaussian target (Hammersley & Morton 1956)."""
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
    lemma, [DBCS23] Sec. 5 / Appendix): C^{-T} sum_i w_i u_i grad V(X_i)^T, symmetrised;
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
    covariance 1/2 (cov + 2hI + (cov (cov + 4hI))^{1/2}) ([DBCS23] eq. (5), Appendix A).
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
    """One FB-GVI step ([DBCS23] eqs. (4)-(5)) from the estimates g ~ E_q[grad V],
    H ~ E_q[hess V]: returns (mean, symmetric scale, min eigenvalue of the covariance)."""
    eye = jnp.eye(q.dim, dtype=q.mean.dtype)
    forward = (eye - h * H) @ q.scale  # Sigma' = forward @ forward.T = M Sigma M
    scale, min_eig = jko_entropy_step(forward @ forward.T, h)
    return q.mean - h * g, scale, min_eig


@functools.lru_cache(maxsize=256)
def _gaussian_kernel(logdensity_fn, method, expectation, num_samples, num_points, hessian,
                     rule="fixed", antithetic=False):
    """The FB-GVI / BW-GD transition with a traceable step size (cached, so that algorithms
    built for different step sizes share one compiled kernel).

    ``rule="fixed"``: the step size passed is h. ``"curvature"``: it is an upper bound h_0
    and the step uses h = min(h_0, c / ||H||_2) with H the E_q[hess V] estimate of this very
    step. ``"backtracking"``: it is an upper bound h_max; see :func:`_backtracking_step`."""

    def kernel(key, state, batch, step_size):
        q = state.q
        d = q.dim
        h = jnp.asarray(step_size, q.mean.dtype)
        if rule == "backtracking":
            potential_fn = lambda x: -_call(logdensity_fn, x, batch)  # noqa: E731
            u, w = _standard_nodes(key, d, q.mean.dtype, expectation, num_samples, num_points,
                                   antithetic)
            return _backtracking_step(potential_fn, state, u, w, hessian, h)
        if callable(expectation):
            g, H = expectation(key, q) if batch is None else expectation(key, q, batch)
        else:
            potential_fn = lambda x: -_call(logdensity_fn, x, batch)  # noqa: E731
            u, w = _standard_nodes(key, d, q.mean.dtype, expectation, num_samples, num_points,
                                   antithetic)
            g, H = expected_grad_hess(potential_fn, q, u, w, hessian)
        if rule == "curvature":  # h * ||H||_2 <= c <= 1: the forward step's stability condition
            norm = jnp.max(jnp.abs(jnp.linalg.eigvalsh(H)))
            h = jnp.where(h * norm > DEFAULT_STEP_FACTOR, DEFAULT_STEP_FACTOR / norm, h)
        if method == "bwgd":  # [DBCS23] eq. (3): explicit step on E[V] - H together
            eye = jnp.eye(d, dtype=q.mean.dtype)
            scale_inv = jnp.linalg.inv(q.scale)
            M = eye - h * (H - scale_inv.T @ scale_inv)
            scale = M @ q.scale
            min_eig = jnp.min(jnp.linalg.eigvalsh(scale @ scale.T))
            mean = q.mean - h * g
        else:  # forward step on E[V], then the closed-form JKO step of -H
            mean, scale, min_eig = _fb_update(q, g, H, h)
        new = state._replace(q=Gaussian(mean, scale))
        return new, VIInfo(min_eig, jnp.linalg.norm(g), h)

    return kernel


def _backtracking_step(potential_fn, state, u, w, hessian, h_max):
    """One FB-GVI step whose h is chosen by backtracking on the smoothness inequality.

    Nodes X_i = m + C u_i (weights w_i) give V_i, grad V_i and the estimates g, H of
    E_q[grad V], E_q[hess V] once; the trial step size starts at

        h = min(2 h_{k-1}, 1 / ||H||_2, h_max)

    and is halved until the candidate q+ = N(m+, C+ C+^T) of [DBCS23] eqs. (4)-(5) is finite
    and, with X_i+ = m+ + C+ u_i (common random numbers: the same u_i),

        sum_i w_i [V(X_i+) - V(X_i) - <grad V(X_i), X_i+ - X_i> - |X_i+ - X_i|^2 / (2h)] <= 0

    (up to floating-point round-off of the V values). This is the descent lemma of a
    (1/h)-smooth V, checked along the coupling (X_i, X_i+) of q and q+: it holds for every
    h <= 1/beta when V is beta-smooth, which is where [DBCS23] Theorem 3.2 uses h <= 1/beta,
    so the test never cuts h below 1/(2 beta) (Beck & Teboulle 2009's backtracking rule for
    proximal gradient, moved to the Bures-Wasserstein space). The cap 1/||H||_2 keeps the
    best Gaussian a fixed point: with Sigma^{-1} = E_q[hess V] and h ||E_q[hess V]|| <= 1 the
    step maps q* to itself (its eigenvalue map has fixed point 1/lambda iff h lambda <= 1;
    docs/vi.md). If ``MAX_BACKTRACKS`` halvings all fail, q stays where it is.
    """
    q = state.q
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
    new = state._replace(q=Gaussian(mean, scale), last_step_size=h.astype(dtype))
    return new, VIInfo(min_eig, jnp.linalg.norm(g), h, i)


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
        _check_choice("expectation", expectation, EXPECTATIONS)
    rule, h = _step_rule(step_size, method, expectation)
    _check_choice("hessian", hessian, HESSIANS)
    num_samples = _positive_int("num_samples", num_samples)
    num_points = _positive_int("num_points", num_points)
    if antithetic is None:
        antithetic = expectation == "monte_carlo" and num_samples % 2 == 0 and method == "fb" \
            and name == "fbgvi"
    if not isinstance(antithetic, bool):
        raise TypeError(f"antithetic must be True or False, got {antithetic!r}")
    if antithetic and (expectation != "monte_carlo" or num_samples % 2):
        raise ValueError("antithetic=True pairs each Monte Carlo draw with its negative: it "
                         "needs expectation='monte_carlo' and an even num_samples, got "
                         f"expectation={expectation!r}, num_samples={num_samples}")
    if max_step_size is not None:
        if rule != "backtracking":
            raise ValueError("max_step_size bounds the 'backtracking' rule only; got "
                             f"step_size={step_size!r}")
        if not (isinstance(max_step_size, (int, float, np.floating, np.integer))
                and not isinstance(max_step_size, bool) and max_step_size > 0):
            raise ValueError(f"max_step_size must be a positive number (inf: no ceiling), "
                             f"got {max_step_size!r}")
    if expectation == "exact_gaussian" and hessian == "stein":
        raise ValueError("hessian='stein' needs random or quadrature nodes; with "
                         "expectation='exact_gaussian' use hessian='exact'")
    if expectation == "gauss_hermite" and dim is not None and num_points**dim > MAX_QUADRATURE_NODES:
        raise ValueError(f"expectation='gauss_hermite' with num_points={num_points} in dim={dim} "
                         f"needs {num_points}**{dim} nodes (> {MAX_QUADRATURE_NODES}); use "
                         "'monte_carlo' or fewer points")
    kernel = _gaussian_kernel(logdensity_fn, method, expectation,
                              num_samples if expectation == "monte_carlo" else 0,
                              num_points if expectation == "gauss_hermite" else 0, hessian,
                              rule, antithetic)
    h_max = None if max_step_size is None else float(max_step_size)

    def step(key, state, batch=None):
        if h_max is not None:  # "backtracking" with its own ceiling
            return kernel(key, state, batch, h_max)
        return kernel(key, state, batch, state.step_size if h is None else h)

    base_init = _make_init(logdensity_fn, dim, name, choose_step=rule != "fixed")

    def init(q0, key=None):
        if expectation == "gauss_hermite" and num_points ** q0.dim > MAX_QUADRATURE_NODES:
            raise ValueError(f"expectation='gauss_hermite' with num_points={num_points} in "
                             f"d={q0.dim} needs more than {MAX_QUADRATURE_NODES} nodes; use "
                             "'monte_carlo' or fewer points")
        state = base_init(q0, key)
        if rule == "backtracking":  # a traced scalar: the running h lives in the state
            start = jnp.asarray(state.step_size, state.q.mean.dtype)
            if h_max is not None:
                start = jnp.minimum(start, h_max)
            state = state._replace(last_step_size=start)
        return state

    return VIAlgorithm(init, step, kernel, h, name, logdensity_fn, dim, rule, h_max)


def fbgvi(logdensity_fn: Callable, step_size=None, *,
          expectation: str = "monte_carlo",
          num_samples: int = 32, num_points: int = 3, hessian: str = "exact",
          antithetic: Optional[bool] = None, max_step_size: Optional[float] = None,
          dim: Optional[int] = None) -> VIAlgorithm:
    """Forward-backward Gaussian VI ([DBCS23] Algorithm 1; update eqs. (4)-(5)).

    On an alpha-strongly log-concave, beta-log-smooth target with h <= 1/beta,
    W2^2(q_k, q*) <= (1 - alpha h)^k W2^2(q_0, q*) ([DBCS23] Theorem 3.2; q* the best
    Gaussian, = pi for a Gaussian pi). For h > 1/beta the iterates stay SPD but can converge
    to a biased covariance (on a Gaussian: h/(2 - h lambda) instead of 1/lambda for
    eigenvalues lambda of the precision with 1 < h lambda < 2), and on a non-log-concave
    target a fixed large h can send the iterates to NaN (``run`` raises).

    Args:
      logdensity_fn: ``x (d,) -> scalar`` log pi(x) up to a constant (V = -logdensity_fn);
        or ``(x, batch) -> scalar`` when run with minibatches.
      step_size: h > 0 (a fixed step), or the name of an adaptive rule; both rules start
        from h_0 = 1 / L_0, L_0 = ||hess log pi(m_0)||_2 at the initial mean
        (:func:`default_step_size`; ``state.step_size`` after ``init``, ``trace.step_size``),
        and record each step's h_k in ``trace.info.step_size``:

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
      a :class:`VIAlgorithm`; ``alg.run(key, vi.Gaussian.standard(d), num_steps)``.
    """
    return _build(logdensity_fn, step_size, "fb", "fbgvi", expectation, num_samples,
                  num_points, hessian, dim, antithetic, max_step_size)


def sfbgvi(logdensity_fn: Callable, step_size=None, *, num_samples: int = 1,
           hessian: str = "exact", antithetic: Optional[bool] = False,
           max_step_size: Optional[float] = None, dim: Optional[int] = None) -> VIAlgorithm:
    """Stochastic FB-GVI ([DBCS23] Algorithm 2): the FB-GVI step with E_q[grad V] and
    E_q[hess V] replaced by their values at ``num_samples`` fresh draws X ~ q (one by
    default). With minibatches (``run(..., batches=...)``), ``logdensity_fn(x, batch)``
    must be an unbiased estimate of log pi(x) (see :func:`minibatch_logdensity`).

    Guarantee ([DBCS23] Theorem 3.4): for alpha-strongly convex, beta-smooth V and
    h <= 1/beta, linear convergence at rate (1 - alpha h) to a neighbourhood of q* whose
    size in expected W2^2 is O(h). On N(mu, A^{-1}) with the exact Hessian (constant) the
    covariance is deterministic and the mean is an AR(1) process whose stationary
    E|m - mu|^2 is exactly h tr((2I - hA)^{-1}) (tested).

    ``step_size``: a number, or a rule as in :func:`fbgvi` (default "backtracking"; both
    rules need the full log-density ``logdensity_fn(x)`` at ``init``; with a minibatch
    log-density pass a number).
    """
    alg = _build(logdensity_fn, step_size, "fb", "sfbgvi", "monte_carlo", num_samples, 1,
                 hessian, dim, antithetic, max_step_size)
    return alg


def bwgd(logdensity_fn: Callable, step_size: float, *, expectation: str = "monte_carlo",
         num_samples: int = 32, num_points: int = 3, hessian: str = "exact",
         dim: Optional[int] = None) -> VIAlgorithm:
    """Bures-Wasserstein gradient descent (Lambert et al. 2022; [DBCS23] eq. (3)).

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


@functools.lru_cache(maxsize=64)
def _reparam_step(logdensity_fn, optimizer, num_samples):
    def loss(params, u, batch):
        mean, raw = params
        chol = _chol_from_raw(raw)
        x = mean + u @ chol.T
        logp = jax.vmap(lambda xi: _call(logdensity_fn, xi, batch))(x)
        return -(jnp.mean(logp) + jnp.sum(jnp.log(jnp.diag(chol))))

    def step(key, state, batch=None):
        mean, _ = state.params
        u = jax.random.normal(key, (num_samples, mean.shape[0]), mean.dtype)
        grads = jax.grad(loss)(state.params, u, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = jax.tree.map(lambda p, du: p + du, state.params, updates)
        chol = _chol_from_raw(params[1])
        gnorm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
        info = VIInfo(jnp.min(jnp.linalg.eigvalsh(chol @ chol.T)), gnorm)
        return VIState(Gaussian(params[0], chol), params, opt_state), info

    return step


def reparam_vi(logdensity_fn: Callable, optimizer=None, *, step_size: float = 1e-2,
               num_samples: int = 1, dim: Optional[int] = None) -> VIAlgorithm:
    """Reparameterisation-gradient Gaussian VI (the "ADVI full-rank" baseline of [DBCS23]).

    Maximises the ELBO E[log p(m + L u)] + sum log L_ii + const over the mean m and a
    lower-triangular L with softplus diagonal (SPD by construction), estimating the gradient
    with ``num_samples`` draws u ~ N(0, I) per step (Titsias & Lazaro-Gredilla 2014), with
    an optax ``optimizer`` (default ``optax.adam(step_size)``).
    """
    import optax

    _check_logdensity(logdensity_fn, dim)
    check_positive("step_size", step_size)
    num_samples = _positive_int("num_samples", num_samples)
    optimizer = optax.adam(step_size) if optimizer is None else optimizer
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got "
                        f"{type(optimizer).__name__}")

    def params_fn(q0):
        chol = jnp.linalg.cholesky(q0.cov)
        raw = jnp.tril(chol, -1) + jnp.diag(_softplus_inv(jnp.diag(chol)))
        params = (q0.mean, raw)
        return VIState(Gaussian(q0.mean, chol), params, optimizer.init(params))

    step = _reparam_step(logdensity_fn, optimizer, num_samples)
    return VIAlgorithm(_make_init(logdensity_fn, dim, "reparam_vi", params_fn), step, None,
                       float(step_size), "reparam_vi", logdensity_fn, dim)


# ------------------------------------------------------------------------ helpers

def minibatch_logdensity(logprior_fn: Callable, loglik_fn: Callable, data_size: int) -> Callable:
    """``(x, batch) -> log prior(x) + (N / n) sum_{i in batch} loglik(x, datum_i)``, an
    unbiased estimate of log pi(x) from a minibatch of n of the N data (for :func:`sfbgvi`)."""
    data_size = _positive_int("data_size", data_size)

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

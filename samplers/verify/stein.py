"""Guarantee checks of the Stein samplers (``samplers verify --method stein``).

Shi, Liu & Mackey, "Sampling with Mirrored Stein Operators", ICLR 2022 (arXiv 2106.12506);
SVGD: Liu & Wang, NeurIPS 2016. The measurements are those of
``tests/theory/test_stein_guarantees.py``, which calls the functions here.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
import scipy.optimize

from .. import stein
from ..stein import kernels, mirror
from ..targets import dirichlet
from . import Check, Outcome, at_most

DIRICHLET_ALPHA = (4.0, 2.0, 3.0, 1.5)


# ------------------------------------------------------------------------------ SVGD

def svgd_field(x, h, score):
    """The SVGD direction phi(x_i) = (1/n) sum_j [k(x_j, x_i) s(x_j) + grad_{x_j} k(x_j, x_i)]
    with k = exp(-|x - y|^2 / h) (Liu & Wang 2016, eq. 8), dense and written out here,
    independently of :mod:`samplers.stein.kernels`. ``x`` (n, d)."""
    diff = x[:, None, :] - x[None, :, :]            # [j, i] = x_j - x_i
    k = jnp.exp(-jnp.sum(diff**2, -1) / h)
    grad = -2.0 / h * k[..., None] * diff          # grad_{x_j} k(x_j, x_i)
    return (k.T @ score(x) + grad.sum(0)) / x.shape[0]


def svgd_ode_end(x0, h, score, t_end: float):
    """x(t_end) of the exact SVGD flow dx/dt = phi(x) from x0 (scipy LSODA, rtol 1e-10;
    call under ``jax.enable_x64``)."""
    shape = x0.shape
    field = jax.jit(lambda y: svgd_field(y.reshape(shape), h, score).ravel())
    ode = scipy.integrate.solve_ivp(lambda t, y: np.asarray(field(y)),
                                    (0.0, t_end), x0.ravel(), method="LSODA", rtol=1e-10,
                                    atol=1e-12)
    return ode.y[:, -1].reshape(shape)


def matched(points, reference):
    """``reference`` relabelled to the nearest matching of ``points`` (particles are
    exchangeable: a fixed point is a set, not a labelled vector)."""
    cost = np.sum((points[:, None] - reference[None]) ** 2, -1)
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return reference[cols[np.argsort(rows)]]


def _run_final(alg, x0, steps: int):
    """The particles after ``steps`` steps of a Stein algorithm (one compiled loop)."""
    @jax.jit
    def go(state):
        return jax.lax.fori_loop(0, steps, lambda _, s: alg.step(None, s)[0], state)
    return np.asarray(go(alg.init(x0)).position)


def svgd_fixed_point(make: Callable = stein.svgd) -> Check:
    """n SVGD particles on N(1, diag(1, 1/4)) with the RBF kernel (fixed h = 1) and step
    eps = 0.25 converge to the zero x* of the SVGD field phi that the exact ODE
    dx/dt = phi(x) reaches from the same start (the Euler iteration's fixed points are the
    field's zeros for every eps; Liu & Wang 2016, eq. 8). Bound, from the linearisation at
    x*: |x - x*| <= |J^{-1}| |phi(x)|, so the distance between the run's end point x and the
    ODE's end point z is at most |J^{-1}| (|phi(x)| + |phi(z)| + r), J the Jacobian of phi
    at z (jax.jacfwd of :func:`svgd_field`), phi the check's own dense field (a sampler
    that stops anywhere but at a zero of the true field fails), and
    r = sqrt(2n) eps64 max|x| / eps the smallest step float64 can resolve (round-off).
    ``make(logdensity_fn, kernel=, step_size=)`` builds the sampler."""
    prec, h, eps = np.array([1.0, 4.0]), 1.0, 0.25

    def score(x):
        return -(x - 1.0) * prec

    def measure(key, full: bool) -> Outcome:
        n, steps = (14, 100_000) if full else (10, 10_000)
        with jax.enable_x64(True):
            x0 = np.asarray(jax.random.normal(key, (n, 2), jnp.float64)) * 2.0 - 1.0
            alg = make(lambda x: -0.5 * jnp.sum(jnp.square(x - 1.0) * prec),
                       kernel=kernels.rbf(h), step_size=eps)
            ours = _run_final(alg, jnp.asarray(x0), steps)
            ode = matched(ours, svgd_ode_end(x0, h, score, steps * eps))
            jac = jax.jacfwd(lambda z: svgd_field(z, h, score).ravel())(jnp.asarray(ode))
            inv_norm = 1.0 / np.linalg.svd(np.asarray(jac).reshape(2 * n, 2 * n),
                                           compute_uv=False)[-1]
            residual = (np.linalg.norm(np.asarray(svgd_field(jnp.asarray(ours), h, score)))
                        + np.linalg.norm(np.asarray(svgd_field(jnp.asarray(ode), h, score)))
                        + np.sqrt(ours.size) * np.finfo(np.float64).eps * np.abs(ours).max() / eps)
        return at_most(np.linalg.norm(ours - ode), inv_norm * residual,
                       f"|x - x*| between {steps:,} SVGD steps and the exact ODE to t = "
                       f"{steps * eps:g}, n = {n} on a 2-d Gaussian (|J^-1| = {inv_norm:.3g})",
                       "linearised bound |J^-1| (|phi(ours)| + |phi(ode)| + round-off), phi written "
                       "in the check")

    return Check("svgd", "Liu & Wang 2016", "n-particle fixed point = zero of the SVGD field",
                 measure)


# ------------------------------------------------------------- MSVGD and SVMD (simplex)

def iid_moment_quantiles(rng: np.random.Generator, alpha, n: int, q: float = 0.99,
                         reps: int = 4000):
    """q-quantiles over ``reps`` sets of n exact Dirichlet(alpha) draws of
    max_i |mean_i - exact_i| and max_i |var_i / exact_i - 1| (free coordinates), with the
    exact means and variances alpha_i / a0, alpha_i (a0 - alpha_i) / (a0^2 (a0 + 1))."""
    alpha = np.asarray(alpha, np.float64)
    a0 = alpha.sum()
    mean = alpha[:-1] / a0
    var = alpha[:-1] * (a0 - alpha[:-1]) / (a0**2 * (a0 + 1))
    draws = rng.dirichlet(alpha, (reps, n))[..., :-1]
    mean_err = np.abs(draws.mean(1) - mean).max(-1)
    var_err = np.abs(draws.var(1) / var - 1).max(-1)
    return np.quantile(mean_err, q), np.quantile(var_err, q), mean, var


def simplex_log_theta(duals):
    """log theta of all K coordinates from the entropic map's duals (..., K - 1), in
    float64 by log-softmax of [eta, 0]: finite exactly when the point is strictly inside."""
    duals = np.asarray(duals, np.float64)
    full = np.concatenate([duals, np.zeros(duals.shape[:-1] + (1,))], -1)
    return full - np.logaddexp.reduce(full, axis=-1, keepdims=True)


def run_duals(alg, x0, steps: int):
    """``steps`` steps of a Stein algorithm from particles ``x0``: the final state and the
    duals after every step (one compiled scan)."""
    @jax.jit
    def go(state):
        def body(s, _):
            s, _ = alg.step(None, s)
            return s, s.dual
        return jax.lax.scan(body, state, None, length=steps)
    return go(alg.init(x0))


def dirichlet_moments(method: str, make: Callable, options: dict, steps: tuple) -> Check:
    """Mirrored Stein particles on Dirichlet(4, 2, 3, 1.5) (entropic simplex map, IMQ
    kernel with the median bandwidth) stay strictly inside the simplex at every step and
    end with moments at least as accurate as n exact i.i.d. draws are 99 % of the time
    (Shi, Liu & Mackey 2022: the particles converge to the target). The
    measured value is the larger of the mean and variance errors, each in units of that
    99 % quantile (computed here from 4,000 sets of exact draws): at most 1 passes.
    ``make(logdensity_fn, mirror_map, **options)`` builds the sampler; ``steps`` is
    (quick, full), with n = 50 / 100 particles started at exact uniform draws."""
    alpha = np.asarray(DIRICHLET_ALPHA)

    def measure(key, full: bool) -> Outcome:
        n, num_steps = (100, steps[1]) if full else (50, steps[0])
        k_init, k_iid = jax.random.split(key)
        target = dirichlet(jnp.asarray(alpha))
        x0 = jax.random.dirichlet(k_init, jnp.ones(alpha.size), (n,))[:, :-1]
        final, duals = run_duals(make(target.logdensity_fn, mirror.simplex_entropic(),
                                       **options), x0, num_steps)
        theta = np.asarray(final.position, np.float64)
        # all K coordinates (theta_K = 1 - sum theta) of every particle at every step are
        # positive in float32, the dtype of the positions
        inside = (np.all(np.isfinite(duals))
                  and np.all(np.exp(simplex_log_theta(duals).astype(np.float32)) > 0)
                  and theta.min() > 0 and (1.0 - theta.sum(1)).min() > 0)
        rng = np.random.default_rng(np.asarray(jax.random.key_data(k_iid)))
        tol_mean, tol_var, mean, var = iid_moment_quantiles(rng, alpha, n)
        error = max(np.abs(theta.mean(0) - mean).max() / tol_mean,
                    np.abs(theta.var(0) / var - 1).max() / tol_var)
        out = at_most(error, 1.0, f"max(mean error, variance error) / their 99 % quantiles "
                      f"over n i.i.d. draws; n = {n}, {num_steps} steps, Dirichlet"
                      f"{DIRICHLET_ALPHA}", "i.i.d. 99 % quantile; every particle inside "
                      "the simplex at every step")
        return out._replace(passed=out.passed and inside)

    return Check(method, "Shi, Liu & Mackey 2022",
                 "Dirichlet moments as good as n i.i.d. draws, strictly inside", measure)


def msvgd_dirichlet(make: Callable = stein.msvgd) -> Check:
    """MSVGD with the theory's plain step eps = 0.1 on eta, 600 / 2,000 steps."""
    return dirichlet_moments("msvgd", make, {"step_size": 0.1}, (600, 2000))


def svmd_dirichlet(make: Callable = stein.svmd) -> Check:
    """SVMD with the reference's RMSprop 0.1 and trace threshold 0.998, 300 / 1,000 steps."""
    return dirichlet_moments("svmd", make, {"optimizer": stein.rmsprop(0.1),
                                            "threshold": 0.998}, (300, 1000))


# ------------------------------------------------------------------------------ SVNG

def svng_constant_metric_error(make: Callable, key, n: int):
    """One SVNG step with a constant metric G = A (no truncation, no jitter) against
    A^{-1} phi_SVGD (:func:`svgd_field`): SVMD with the constant Hessian A has dual direction
    phi_SVGD, and SVNG pulls it back by G^{-1} (Shi, Liu & Mackey 2022, Sec. 4.3; note A.4).
    Returns the largest error relative to |A^{-1}| times the largest sum of absolute terms
    of phi (the scale of a sum's round-off), and its round-off bound
    n eps64 kappa(K)^{1/2} kappa(A) (the square-root kernel's eigenvectors lose orthogonality
    by about n eps, amplified by sqrt(lambda_max / lambda_min) of the Gram matrix K, then
    the solve by kappa(A)). Call under ``jax.enable_x64``."""
    prec, h, eps = np.array([1.0, 4.0]), 1.3, 0.05
    A = np.array([[3.0, 0.5], [0.5, 0.8]])
    x0 = jax.random.normal(key, (n, 2), jnp.float64)
    alg = make(lambda x: -0.5 * jnp.sum(jnp.square(x - 1.0) * prec), lambda t: jnp.asarray(A),
               kernel=kernels.rbf(h), step_size=eps, threshold=None, jitter=0.0)
    state = alg.init(x0)
    got = np.asarray(jax.jit(alg.step)(None, state)[0].position - x0) / eps
    expect = np.linalg.solve(A, np.asarray(svgd_field(x0, h, lambda x: -(x - 1.0) * prec)).T).T
    x = np.asarray(x0)
    diff = x[:, None] - x[None]
    gram = np.exp(-np.sum(diff**2, -1) / h)
    terms = (gram.T @ np.abs(prec * (x - 1.0))
             + 2.0 / h * np.abs(gram[..., None] * diff).sum(0)) / n
    scale = np.linalg.norm(np.linalg.inv(A), 2) * terms.max()
    bound = n * np.finfo(np.float64).eps * np.sqrt(np.linalg.cond(gram)) * np.linalg.cond(A)
    return np.abs(got - expect).max() / scale, bound


def logistic_problem(rng: np.random.Generator, n: int = 2000):
    """Note A.9-5's ill-conditioned logistic regression: bias + 5 features with scales
    1, 1, 2, 5, 10, 20, weights drawn with sd 1 / scale; (X_train, y_train, X_test, y_test)."""
    scales = np.array([1.0, 1.0, 2.0, 5.0, 10.0, 20.0])

    def features(m):
        return np.concatenate([np.ones((m, 1)), rng.normal(size=(m, 5)) * scales[1:]], 1)

    w_true = rng.normal(size=6) / scales
    Xtr, Xte = features(n), features(n)
    ytr = (rng.uniform(size=n) < 1 / (1 + np.exp(-Xtr @ w_true))).astype(float)
    yte = (rng.uniform(size=n) < 1 / (1 + np.exp(-Xte @ w_true))).astype(float)
    return Xtr, ytr, Xte, yte


def _map_test_loglik(Xtr, ytr, Xte, yte):
    """Test log-likelihood of the plug-in MAP (scipy BFGS; prior N(0, I))."""
    def neg_logpost(w):
        z = Xtr @ w
        return -(ytr @ z - np.logaddexp(0.0, z).sum() - 0.5 * w @ w)

    w_map = scipy.optimize.minimize(neg_logpost, np.zeros(Xtr.shape[1]), method="BFGS").x
    p_map = 1 / (1 + np.exp(-Xte @ w_map))
    return float(np.mean(yte * np.log(p_map) + (1 - yte) * np.log1p(-p_map)))


def svng_svgd_iterations(rng: np.random.Generator, make_svng: Callable = stein.svng,
                         make_svgd: Callable = stein.svgd, steps: int = 300,
                         svgd_rates=(1e-4, 3e-5, 1e-5)):
    """Iterations for SVNG (lr 1, exact Fisher + I metric, RBF/median, threshold 0.98) and
    for SVGD at each rate of ``svgd_rates`` (larger ones oscillate) to reach the MAP plug-in
    test log-likelihood less 0.01 on :func:`logistic_problem` (20 particles, full batch;
    Shi, Liu & Mackey 2022, Sec. 5.3, note A.9-5). None where a run never reaches it.
    Returns (svng iterations, {rate: svgd iterations}, the goal, the final values)."""
    Xtr, ytr, Xte, yte = logistic_problem(rng)
    goal = _map_test_loglik(Xtr, ytr, Xte, yte) - 0.01
    with jax.enable_x64(True):
        X, y, Xt, yt = map(jnp.asarray, (Xtr, ytr, Xte, yte))

        def logp(w):
            z = X @ w
            return jnp.sum(y * z - jnp.logaddexp(0.0, z)) - 0.5 * w @ w

        def fisher(w):
            s = jax.nn.sigmoid(X @ w)
            return (X.T * (s * (1 - s))) @ X + jnp.eye(6)

        def test_loglik(particles):
            p = jnp.mean(jax.nn.sigmoid(Xt @ particles.T), axis=1)
            return jnp.mean(yt * jnp.log(p) + (1 - yt) * jnp.log1p(-p))

        x0 = jnp.asarray(rng.normal(size=(20, 6)) * 0.1)

        def curve(alg):
            @jax.jit
            def go(state):
                def body(s, _):
                    s, _ = alg.step(None, s)
                    return s, test_loglik(s.position)
                return jax.lax.scan(body, state, None, length=steps)[1]
            return np.asarray(go(alg.init(x0)))

        curves = {"svng": curve(make_svng(logp, fisher, step_size=1.0))}
        curves.update({lr: curve(make_svgd(logp, step_size=lr)) for lr in svgd_rates})

    def first(c):
        hit = np.where(np.isfinite(c) & (c >= goal))[0]
        return int(hit[0]) + 1 if hit.size else None

    hits = {name: first(c) for name, c in curves.items()}
    svng_hit = hits.pop("svng")
    return svng_hit, hits, goal, {name: float(c[-1]) for name, c in curves.items()}


def svng_natural_gradient(make: Callable = stein.svng) -> Check:
    """Quick: the exact identity of :func:`svng_constant_metric_error` (n = 12 particles),
    against its round-off bound. Full: the paper's claim on :func:`svng_svgd_iterations`
    (300 iterations): SVNG reaches the goal in fewer iterations than the best SVGD rate
    (measured: SVNG's iterations; bound: SVGD's best less one, or 300 if none reaches it).
    ``make(logdensity_fn, metric_fn, kernel=, step_size=, threshold=, jitter=)``."""

    def measure(key, full: bool) -> Outcome:
        if full:
            rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
            svng_hit, svgd_hits, goal, _ = svng_svgd_iterations(rng, make)
            reached = [h for h in svgd_hits.values() if h is not None]
            bound = min(reached) - 1 if reached else 300
            return at_most(np.inf if svng_hit is None else svng_hit, bound,
                           f"iterations to test log-lik {goal:.4f} on a d = 6 ill-conditioned "
                           f"logistic regression, 20 particles; SVGD {svgd_hits}",
                           "fewer than SVGD at its best rate")
        with jax.enable_x64(True):
            error, bound = svng_constant_metric_error(make, key, 12)
        return at_most(error, bound, "max |step / eps - A^-1 phi_SVGD| / (|A^-1| max sum|terms|), "
                       "constant metric A, n = 12, d = 2", "round-off bound")

    return Check("svng", "Shi, Liu & Mackey 2022",
                 "natural-gradient step G^-1 x SVMD direction; fewer iterations than SVGD (full)",
                 measure)


def checks() -> list[Check]:
    """The Stein checks, in the table's order."""
    return [svgd_fixed_point(), msvgd_dirichlet(), svmd_dirichlet(), svng_natural_gradient()]

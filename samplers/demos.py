"""The rows of ``samplers demo`` that the ``samplers`` package brings: each sampler on a
target with a known answer. No library module imports this one; the CLI
(:mod:`samplers.cli`) reads it, the Langevin and FA-LD rows through :func:`demo_cases`, the
others through the ``samplers.demos`` entry points (as it reads the rows of ``vi.demos`` and
``diffusion.demos``).

A row function returns a dict with "method", "target", "w2_error" (its exact error measure,
0 for an exact answer), "min_ess" (None for particles), "seconds", "plot" (None) and what its
plot draws: "draws" (n, d) against "exact_draws" (m, d), or "marginals" (see
:func:`smc_row`).
"""
from __future__ import annotations

import time
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import federated, langevin, sliced_wasserstein_flow, smc, stein, targets
from .diagnostics import empirical_w2, gaussian_w2
from .run import run

__all__ = ["DemoCase", "demo_cases", "smc_row", "stein_row", "sw_flow_row"]


class DemoCase(NamedTuple):
    """One Langevin or FA-LD row of the demo: a sampler on a target with a known answer."""

    method: str
    target: targets.Target
    algorithm: object
    num_steps: int
    num_warmup: int = 0
    batch_size: Optional[int] = None


def demo_cases(key, num_steps: int = 20_000) -> list[DemoCase]:
    """Each Langevin sampler and FA-LD on its default target (exact mean and covariance
    known); ``key`` draws the regression data of the sgld row. The first word of each
    ``method`` is the row's name."""
    gauss = targets.gaussian(jnp.array([1.0, -1.0]), jnp.array([[1.0, 0.8], [0.8, 1.5]]))
    blr = targets.make_linear_regression(key, n=500, d=2, noise_scale=1.0, prior_scale=1.0)
    sgld_grad = langevin.minibatch_gradient(blr.logprior_fn, blr.loglik_fn, 500)
    fed_target, fed_clients = _federated_gaussian()
    return [
        DemoCase("ula", gauss, langevin.ula(gauss.logdensity_fn, 0.2), num_steps),
        DemoCase("mala", gauss, langevin.mala(gauss.logdensity_fn, 0.5), num_steps, num_warmup=1000),
        DemoCase("underdamped (BAOAB)", gauss, langevin.underdamped(gauss.logdensity_fn, 0.3),
                 num_steps, num_warmup=1000),
        DemoCase("sgld", blr, langevin.sgld(sgld_grad, 2e-4), num_steps, num_warmup=1000,
                 batch_size=50),
        DemoCase("fald (K=5)", fed_target, federated.fald(fed_clients, 5, 0.02),
                 max(10, num_steps // 50 * 10), num_warmup=200),
    ]


def _federated_gaussian():
    """Four clients with quadratic potentials of different curvature and optimum; the
    posterior is N(A^-1 sum_c A_c mu_c, A^-1), A = sum_c A_c. FA-LD's error includes its
    heterogeneity bias [Deng2024, Theorem 4.7]."""
    precisions = jnp.array([[[2.0, 0.5], [0.5, 1.0]], [[1.0, 0.0], [0.0, 3.0]],
                            [[1.5, -0.5], [-0.5, 1.0]], [[0.5, 0.0], [0.0, 0.5]]])
    means = jnp.array([[1.0, 0.0], [-1.0, 1.0], [0.5, -1.0], [0.0, 2.0]])
    cov = jnp.linalg.inv(precisions.sum(0))
    mean = cov @ jnp.einsum("cij,cj->i", precisions, means)
    clients = [lambda x, a=a, m=m: -0.5 * (x - m) @ a @ (x - m) for a, m in zip(precisions, means)]
    return targets.gaussian(mean, cov)._replace(name="gaussian (4 clients)"), clients


_STEIN_ALPHA = (4.0, 2.0, 3.0, 1.5)


def stein_row(seed: int = 0, num_particles: int = 100, num_steps: int = 1000) -> dict:
    """The stein row: MSVGD (entropic simplex map, IMQ kernel with the median bandwidth, the
    theory's plain step eps = 0.1 on eta) on Dirichlet(4, 2, 3, 1.5), particles started from
    exact uniform draws on the simplex (Dirichlet(1, 1, 1, 1), numpy seed ``seed``).

    The error ``w2_error`` is the Wasserstein-2 distance between the Gaussian with the
    particles' mean and covariance and the one with the exact Dirichlet mean and covariance
    (the metric of the Langevin rows). Returns a dict with "method", "target",
    "w2_error", "min_ess" (None: particles, not a chain), "seconds", "plot" (None) and, for
    the demo's plot, "draws" (the final particles, (num_particles, 3): the first three
    coordinates of the simplex) and "exact_draws" (1000 exact Dirichlet draws, likewise).
    """
    target = targets.dirichlet(jnp.asarray(_STEIN_ALPHA))
    rng = np.random.default_rng(seed)
    x0 = jnp.asarray(rng.dirichlet(np.ones(len(_STEIN_ALPHA)), num_particles)[:, :-1], jnp.float32)
    alg = stein.msvgd(target.logdensity_fn, stein.mirror.simplex_entropic(), step_size=0.1)
    start = time.perf_counter()
    trace = run(jax.random.key(seed), alg, x0, num_steps, thin=num_steps, progress=False)
    final = np.asarray(trace.positions[0, -1], np.float64)
    seconds = time.perf_counter() - start
    error = float(gaussian_w2(final.mean(0), np.cov(final.T), np.asarray(target.mean),
                              np.asarray(target.cov)))
    exact = np.asarray(target.sample(jax.random.fold_in(jax.random.key(seed), 1), 1000))
    return {"method": "msvgd (simplex)", "target": f"dirichlet{_STEIN_ALPHA} (n={num_particles})",
            "w2_error": error, "min_ess": None, "seconds": seconds, "plot": None,
            "draws": final, "exact_draws": exact, "axis_labels": ("$x_1$", "$x_2$"),
            "draws_label": f"msvgd: {num_particles} particles after {num_steps} steps"}


def sw_flow_row(seed: int = 0, num_points: int = 500, num_steps: int = 500) -> dict:
    """The sw_flow row: an SW flow (upper control variate) from N(0, I_2) particles to a
    target cloud, scored by the exact W_2 between the final particles and the target (an
    optimal assignment, :func:`samplers.diagnostics.empirical_w2`; 0 is the exact answer).

    Returns a dict with "method", "target", "w2_error", "min_ess" (None: particles, not a
    chain), "seconds", "plot" (None) and, for the demo's plot, "draws" (the final particles,
    (num_points, 2)) and "exact_draws" (the target cloud, (num_points, 2)).
    """
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, num_points)
    radius = 2.0 + 0.2 * rng.standard_normal(num_points)
    target = np.stack([radius * np.cos(angle) + 1.0, radius * np.sin(angle) - 1.0], 1)
    source = rng.standard_normal((num_points, 2))
    flow = sliced_wasserstein_flow(jnp.asarray(target, jnp.float32), step_size=0.2,
                                   num_projections=50, control_variate="upper")
    start = time.perf_counter()
    trace = run(jax.random.key(seed), flow, jnp.asarray(source, jnp.float32), num_steps,
                thin=num_steps, progress=False)
    final = np.asarray(trace.positions[0, -1])
    seconds = time.perf_counter() - start
    return {"method": "sw flow (upper CV)", "target": "ring cloud (n=500, d=2)",
            "w2_error": float(empirical_w2(final, target)), "min_ess": None,
            "seconds": seconds, "plot": None, "draws": final, "exact_draws": target,
            "draws_label": f"particles after {num_steps} steps", "exact_label": "target cloud"}


def _marginal_moments(num_steps):
    """(initial_fn, additive_fn) whose smoothed sums are the vectors (E[x_t | y])_t and
    (E[x_t^2 | y])_t: the term at step t puts x_{t+1} (and its square) in slot t + 1."""

    def initial(x0):
        slot = jnp.zeros(num_steps, x0.dtype).at[0].set(x0[0])
        return {"m1": slot, "m2": slot ** 2}

    def additive(t, x, x_next):
        slot = jnp.zeros(num_steps, x_next.dtype).at[t + 1].set(x_next[0])
        return {"m1": slot, "m2": slot ** 2}

    return initial, additive


def smc_row(seed: int = 0, num_steps: int = 50, num_particles: int = 32, num_sweeps: int = 20,
            burn_in: int = 5, num_chains: int = 8) -> dict:
    """The smc row: PPG (``num_particles`` particles, Ñ = 2 exact backward draws,
    ``num_sweeps`` sweeps of which ``burn_in`` are left out of the roll-out average,
    ``num_chains`` independent chains) estimating every smoothing marginal's mean and
    variance of the scalar model x_{t+1} = 0.9 x_t + N(0, 0.5), y_t = x_t + N(0, 1),
    ``num_steps`` observations simulated from it (float32).

    The smoothing marginals are Gaussian, N(m_{t|T}, P_{t|T}) from the RTS smoother, so
    "w2_error" is the exact W2 distance between N(m_hat_t, v_hat_t) and N(m_{t|T}, P_{t|T}),
    root-mean-square over t (m_hat, v_hat from the chains' averaged roll-outs).
    "mc_error" is the level that Monte Carlo noise alone gives it: the same root mean square
    of the standard errors of m_hat_t and sqrt(v_hat_t), computed across the chains
    (delta method); an unbiased estimator has w2_error close to mc_error.
    "seconds" includes compilation. Returns a dict with "method", "target", "w2_error",
    "min_ess" (None), "seconds", "plot" (None), "mc_error" and, for the demo's plot,
    "marginals": {"t", "mean", "sd", "exact_mean", "exact_sd", "observations"}, arrays over
    t = 0..num_steps-1 (the estimated and the exact smoothing means and standard deviations,
    and the data y_t).
    """
    model = smc.LinearGaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
    k_data, k_path, k_run = jax.random.split(jax.random.key(seed), 3)
    _, ys = smc.simulate(k_data, model, num_steps)
    initial, additive = _marginal_moments(num_steps)
    start = time.perf_counter()
    # exact O(N^2) backward draws: cheap at this N, and they compile in half the time of
    # accept-reject (7 s against 16 s for one sweep on a busy 2-core CPU)
    alg = smc.ppg(model, ys, additive, num_particles, burn_in=burn_in, initial_fn=initial,
                  backward="exact")
    trace = run(k_run, alg, smc.initial_path(k_path, model, ys), num_sweeps,
                num_chains=num_chains, thin=num_sweeps, progress=False)
    est = jax.tree.map(lambda a: np.asarray(a, np.float64), trace.final_state.estimate)
    seconds = time.perf_counter() - start
    rts = smc.rts_smoother(model, ys)
    mean, var = np.asarray(rts.means[:, 0], np.float64), np.asarray(rts.covs[:, 0, 0], np.float64)
    # per-chain roll-outs (chain, t) -> averaged estimates and their standard errors
    m1, m2 = est["m1"], est["m2"]
    m_hat, s_hat = m1.mean(0), m2.mean(0)
    sd_hat = np.sqrt(np.maximum(s_hat - m_hat ** 2, 0.0))
    w2_sq = (m_hat - mean) ** 2 + (sd_hat - np.sqrt(var)) ** 2
    c = num_chains
    var_m1, var_m2 = m1.var(0, ddof=1) / c, m2.var(0, ddof=1) / c
    cov_12 = np.sum((m1 - m_hat) * (m2 - s_hat), axis=0) / (c - 1) / c
    g1, g2 = -m_hat / sd_hat, 0.5 / sd_hat  # d sd / d E[x], d sd / d E[x^2]
    var_sd = g1 ** 2 * var_m1 + 2 * g1 * g2 * cov_12 + g2 ** 2 * var_m2
    return {"method": f"ppg (N={num_particles}, {num_sweeps} sweeps, k0={burn_in})",
            "target": f"LG smoothing marginals (T={num_steps}, d=1)",
            "w2_error": float(np.sqrt(np.mean(w2_sq))), "min_ess": None, "seconds": seconds,
            "plot": None, "mc_error": float(np.sqrt(np.mean(var_m1 + var_sd))),
            "marginals": {"t": np.arange(num_steps), "mean": m_hat, "sd": sd_hat,
                          "exact_mean": mean, "exact_sd": np.sqrt(var),
                          "observations": np.asarray(ys, np.float64).reshape(num_steps, -1)[:, 0]}}

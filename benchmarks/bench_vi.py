"""Time to a KL tolerance: FB-GVI against BlackJAX's full-rank VI and NumPyro's SVI.

Target: Bayesian logistic regression (N(0, I) prior, n data, d features, float32). Its best
Gaussian q* is computed once, independently of the timed code, by deterministic FB-GVI
whose Gaussian expectations are 1-d Gauss-Hermite integrals (eta_i = x_i . w is Gaussian
under q), in float64; the objective F(q) = KL(q || pi) - log Z is evaluated the same way,
so the "KL gap" F(q) - F(q*) = KL(q || pi) - KL(q* || pi) is exact up to quadrature.

Each method runs a fixed budget of steps once (recording its Gaussian every step) to find
the first step after which the KL gap stays below ``tol`` (0.1 and 0.01); then the harness
times each method running exactly that many steps (compiled, from the same start N(0, I)):

* ours: ``vi.fbgvi`` (run by ``samplers.run`` through ``vi.fit``) with Monte Carlo
  expectations (``num_samples`` draws, exact Hessians), in three settings: the default
  step rule ("backtracking") with antithetic draws, the default rule with independent
  draws, and the former benchmark setting, a fixed step
  0.25/beta with beta = lambda_max(X^T X)/4 + 1 (the Monte Carlo noise floor of the KL gap
  grows like h / num_samples: 0.17 at h = 1/beta with 8 independent draws, 0.03 at
  0.25/beta); a setting that does not stay below ``tol`` within the budget is reported and
  skipped;
* ``blackjax.fullrank_vi`` (reparameterised ELBO gradient, optax Adam);
* NumPyro ``SVI`` with ``AutoMultivariateNormal`` and ``Trace_ELBO`` (Adam),
  both with the same number of draws per step and the best learning rate of a small grid.

The ratio is peer time / our time to the same tolerance (> 1: FB-GVI is faster); steps to
tolerance are in the table. ``python -m benchmarks.bench_vi [--quick] [--out DIR]``.
"""
from __future__ import annotations

import sys

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal

import vi

from .harness import Case, main

NAME = "vi"
TITLE = "Gaussian VI: FB-GVI vs BlackJAX full-rank VI and NumPyro SVI (time to a KL tolerance)"
PEERS = ("blackjax", "numpyro", "optax")
NOTES = """
Bayesian logistic regression (N(0, I) prior), float32, start N(0, I). KL gap =
KL(q || pi) - KL(q* || pi), exact up to 1-d quadrature, q* = the best Gaussian (deterministic
FB-GVI with quadrature expectations, float64). Steps to tolerance = first step after which the
gap stays below tol within the budget. Each side is timed running exactly its own number of
steps, so peer/ours is the ratio of times to the tolerance. FB-GVI: Monte Carlo expectations
with exact Hessians; "backtracking" is the default step rule (step_size=None), "+anti" pairs the
draws u, -u; "fixed" is h = 0.25/beta. Peers: Adam, best learning rate of the grid (per
tolerance), same draws per step. The check column is the KL gap at the end of each timed run.
"""

GH_X, GH_W = np.polynomial.hermite_e.hermegauss(40)
GH_W = GH_W / GH_W.sum()


def config(quick: bool) -> dict:
    return {
        "n": 200, "d": 10, "num_samples": 8, "tols": [0.1, 0.01], "step_scale": 0.25,
        "budget": 1000 if quick else 4000,
        "learning_rates": [0.01, 0.03] if quick else [0.003, 0.01, 0.03, 0.1],
        "repeats": 3 if quick else 7, "min_time": 0.02 if quick else 0.1, "seed": 0,
    }


def problem(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / np.sqrt(d) * 2.0
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ rng.standard_normal(d)))).astype(np.float64)
    return X, y


def objective(X, y, m, S):
    """F(q) = E_q[V] - H(q) by 1-d Gauss-Hermite quadrature (float64 numpy)."""
    m, S = np.asarray(m, np.float64), np.asarray(S, np.float64)
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(S))):
        return np.inf
    loc, sd = X @ m, np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, S, X), 0))
    energy = (np.logaddexp(0, loc[:, None] + sd[:, None] * GH_X) @ GH_W).sum() - y @ loc
    sign, logdet = np.linalg.slogdet(S)
    return energy + 0.5 * (m @ m + np.trace(S)) - 0.5 * logdet if sign > 0 else np.inf


def best_gaussian(X, y, num_steps=500):
    """q* and F(q*) by deterministic FB-GVI with quadrature expectations, float64."""
    d = X.shape[1]
    beta = np.linalg.eigvalsh(X.T @ X).max() / 4 + 1.0
    with jax.enable_x64(True):
        Xj, yj, nodes, weights = (jnp.asarray(a) for a in (X, y, GH_X, GH_W))

        def expectation(key, q):
            cov = q.cov
            loc, sd = Xj @ q.mean, jnp.sqrt(jnp.einsum("ij,jk,ik->i", Xj, cov, Xj))
            p = jax.nn.sigmoid(loc[:, None] + sd[:, None] * nodes[None, :])
            grad = Xj.T @ (p @ weights - yj) + q.mean
            return grad, (Xj.T * ((p * (1 - p)) @ weights)) @ Xj + jnp.eye(d)

        q, _ = vi.fit(jax.random.key(0),
                      vi.fbgvi(lambda w: -0.5 * w @ w, 1 / beta, expectation=expectation),
                      vi.Gaussian.standard(d), num_steps, thin=num_steps, progress=False)
        m, S = np.asarray(q.mean), np.asarray(q.cov)
    return m, S, objective(X, y, m, S), beta


def steps_to_tol(gaps, tol):
    """First step (1-based) after which every gap is <= tol, or None."""
    above = np.nonzero(~(np.asarray(gaps) <= tol))[0]
    if above.size == 0:
        return 1
    return None if above[-1] + 1 >= len(gaps) else int(above[-1] + 2)


def cases(cfg):
    X, y = problem(cfg["n"], cfg["d"], cfg["seed"])
    m_star, S_star, f_star, beta = best_gaussian(X, y)
    d, k = cfg["d"], cfg["num_samples"]
    Xj, yj = jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32)

    def logdensity_fn(w):
        eta = Xj @ w
        return jnp.sum(yj * eta - jnp.logaddexp(0.0, eta)) - 0.5 * w @ w

    def model():
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=Xj @ w), obs=yj)

    gap = lambda m, S: objective(X, y, m, S) - f_star  # noqa: E731
    key = jax.random.key(cfg["seed"])

    # ours ------------------------------------------------------------------------
    q0 = vi.Gaussian.standard(d)
    variants = {
        "fbgvi backtracking+anti": vi.fbgvi(logdensity_fn, expectation="monte_carlo",
                                            num_samples=k, antithetic=True),
        "fbgvi backtracking": vi.fbgvi(logdensity_fn, expectation="monte_carlo",
                                       num_samples=k, antithetic=False),
        "fbgvi fixed 0.25/beta": vi.fbgvi(logdensity_fn, cfg["step_scale"] / beta,
                                          expectation="monte_carlo", num_samples=k,
                                          antithetic=False),
    }
    our_gaps = {}
    for label, alg in variants.items():
        _, tr = vi.fit(key, alg, q0, cfg["budget"], on_nonfinite="flag", progress=False)
        our_gaps[label] = [gap(m, S) for m, S in zip(np.asarray(tr.positions.mean[0]),
                                                     np.asarray(tr.positions.cov[0]))]

    def our_runner(alg, n_steps):
        def ours():
            return vi.fit(key, alg, q0, n_steps, thin=n_steps, on_nonfinite="flag",
                          progress=False)[0]
        return ours

    # BlackJAX full-rank VI ----------------------------------------------------------
    def blackjax_runner(lr, n_steps, record):
        frvi = blackjax.fullrank_vi(logdensity_fn, optax.adam(lr), num_samples=k)

        @jax.jit
        def run(key):
            def body(state, t):
                state, _ = frvi.step(jax.random.fold_in(key, t), state)
                return state, (state.mu, state.chol_params) if record else None
            return jax.lax.scan(body, frvi.init(jnp.zeros(d)), jnp.arange(n_steps))
        return run

    def blackjax_gaussian(mu, chol_params):
        L = blackjax.vi.fullrank_vi._unflatten_cholesky(jnp.asarray(chol_params), d)
        return np.asarray(mu), np.asarray(L @ L.T)

    # NumPyro SVI ------------------------------------------------------------------
    def numpyro_runner(lr, n_steps, record):
        guide = AutoMultivariateNormal(model, init_loc_fn=numpyro.infer.init_to_value(
            values={"w": jnp.zeros(d)}), init_scale=1.0)
        svi = SVI(model, guide, numpyro.optim.Adam(lr), Trace_ELBO(num_particles=k))

        @jax.jit
        def run(key):
            k_init, k_run = jax.random.split(key)
            state = svi.init(k_init)

            def body(state, _):
                state, _ = svi.update(state)
                p = svi.get_params(state)
                return state, (p["auto_loc"], p["auto_scale_tril"]) if record else None
            return jax.lax.scan(body, state, None, length=n_steps)
        return run

    def numpyro_gaussian(loc, tril):
        tril = np.asarray(tril, np.float64)
        return np.asarray(loc), tril @ tril.T

    out = []
    peer_gaps = {}
    for peer_name, runner, to_gaussian in (("blackjax", blackjax_runner, blackjax_gaussian),
                                           ("numpyro", numpyro_runner, numpyro_gaussian)):
        for lr in cfg["learning_rates"]:
            _, (a, b) = runner(lr, cfg["budget"], True)(key)
            a, b = np.asarray(a), np.asarray(b)
            peer_gaps[peer_name, lr] = [gap(*to_gaussian(a[i], b[i])) for i in range(len(a))]
    for tol in cfg["tols"]:
        for peer_name, runner, to_gaussian in (("blackjax", blackjax_runner, blackjax_gaussian),
                                               ("numpyro", numpyro_runner, numpyro_gaussian)):
            best = None
            for lr in cfg["learning_rates"]:
                k_peer = steps_to_tol(peer_gaps[peer_name, lr], tol)
                if k_peer is not None and (best is None or k_peer < best[1]):
                    best = (lr, k_peer)
            if best is None:
                print(f"  {peer_name}: no learning rate reached tol {tol} in {cfg['budget']} steps")
                continue
            lr, k_peer = best
            peer_run = runner(lr, k_peer, False)
            final = runner(lr, k_peer, True)
            for label, alg in variants.items():
                k_ours = steps_to_tol(our_gaps[label], tol)
                if k_ours is None:
                    print(f"  {label}: did not stay below tol {tol} in {cfg['budget']} steps")
                    continue

                def peer(run=peer_run):
                    return run(key)[0]

                def check(our_q, _peer_out, final=final, to_gaussian=to_gaussian):
                    _, (a, b) = final(key)
                    return {"KL gap": (gap(np.asarray(our_q.mean), np.asarray(our_q.cov)),
                                       gap(*to_gaussian(np.asarray(a)[-1], np.asarray(b)[-1])))}

                out.append(Case(label, {"d": d, "n": cfg["n"], "tol": tol,
                                        "steps_ours": k_ours, "steps_peer": k_peer,
                                        "peer_lr": lr},
                                our_runner(alg, k_ours), peer, peer_name, check))
    return out


if __name__ == "__main__":
    sys.exit(main({NAME: "benchmarks.bench_vi"}))

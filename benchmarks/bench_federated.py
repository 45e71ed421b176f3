"""FA-LD: the communication/accuracy trade-off, and client-step throughput on one device vs sharded.

**Trade-off (exact, no sampling).** On quadratic clients f_c(x) = 1/2 (x - mu_c)^T A_c (x - mu_c)
one FA-LD round [Deng2024, Algorithm 1] is the affine Gaussian map
x -> M x + b + e, e ~ N(0, Q), with G_c = I - eta A_c / p_c and

    M = sum_c p_c G_c^K,   b = sum_c p_c (I - G_c^K) mu_c,
    Q = 2 eta sum_{j<K} [rho^2 (sum_c p_c G_c^j)(sum_c p_c G_c^j)^T + (1 - rho^2) sum_c p_c G_c^{2j}].

From a point x0 the law after r rounds is N(m_r, S_r) with m_r = m* + M^r (x0 - m*) and
S_r = S* - M^r S* M^r (M is symmetric under full participation), so W2(law_r, posterior) is
known exactly for every r and "rounds to reach W2 <= eps" has no Monte Carlo error. (Sampling
W2 from a few hundred runs, as the paper's Fig. 1 does, has a noise floor of the same size as
its eps = 1e-3.) The clients have *different* curvatures A_c: with a common curvature
(A_c = p_c A) FA-LD's law is exactly ULA's after r K steps, whatever K, and there is no
trade-off to show (a column of the table confirms it). One K is confirmed by simulating
``samplers.fald`` with ``samplers.run``.

**Throughput.** Client-steps per second (clients x local steps x rounds / time) of a data-client
FA-LD (logistic regression, full client gradients) on one device with ``vmap`` over clients,
against ``samplers.federated.sharded`` over fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=n``), timed side by side in a subprocess
that has n devices. In this process ``samplers.fald`` is also timed against a bare
``vmap``/``lax.scan`` implementation of the same round (the harness's table).

``python -m benchmarks.bench_federated [--quick] [--out DIR]``; the plot of the trade-off:
``python -m benchmarks.bench_federated plot RESULTS.json OUT.png``.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import solve_discrete_lyapunov

import samplers
from samplers import federated

from .harness import Case, compare, main

NAME = "federated"
TITLE = "FA-LD: rounds to a W2 tolerance vs local steps K (exact law); client-steps/s, vmap vs sharded"
PEERS = ()
BASE_NOTES = """
Three studies: the communication/accuracy trade-off from FA-LD's exact law on heterogeneous
quadratic clients (with one simulation check), client-steps per second on one device vs sharded
over fake CPU devices (a subprocess), and, in the table at the end, `samplers.fald` (one
device, `vmap` over clients) against a bare `vmap` + `lax.scan` implementation of the same
FA-LD round (independent noise, full client gradients), both in one jitted `lax.scan` over
rounds, one chain; there peer/ours < 1 means the library's round costs more than the bare one,
and the check column is the mean of |x|^2 over rounds (same law, different keys).
"""
NOTES = BASE_NOTES  # cases() appends the measured trade-off and sharding tables

ROOT = Path(__file__).resolve().parents[1]


def config(quick: bool) -> dict:
    """Sizes. ``quick`` (under two minutes on two CPU cores): a coarser step-size grid, fewer
    simulated chains, the two smaller throughput sizes and 4 fake devices only."""
    return {
        # trade-off: N clients in d dimensions, heterogeneous curvature and optima
        "num_clients": 10, "dim": 2, "heterogeneity": [0.1, 1.0], "curvature_range": [0.2, 5.0],
        "seed": 0, "start_sds": 5.0, "step_size": 0.01,
        "local_steps": [1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 100],
        "tolerances": [0.1, 0.05, 0.02], "tuned_tolerance": 0.02,
        "tuned_local_steps": [1, 2, 5, 10, 20, 50, 100, 300],
        "step_grid": 48 if quick else 96, "max_rounds": 5000,
        # simulation check of one K
        "check_local_steps": 10, "check_chains": 2000 if quick else 8000,
        # throughput: (clients, points per client, dim, K, rounds)
        "sizes": ([(8, 64, 5, 10, 50), (8, 1024, 20, 10, 20)] if quick else
                  [(8, 64, 5, 10, 100), (8, 1024, 20, 10, 50), (8, 8192, 50, 10, 10)]),
        "device_counts": [4] if quick else [4, 8],
        "repeats": 3 if quick else 7, "min_time": 0.02 if quick else 0.1,
    }


# ------------------------------------------------------------------ quadratic clients

def quadratic_clients(num_clients: int, dim: int, heterogeneity: float, curvature_range,
                      seed: int = 0, common_curvature: bool = False):
    """Client precisions A (N, d, d), optima mu (N, d) and equal weights p (N,).

    The scaled client Hessian A_c / p_c has eigenvalues log-uniform in ``curvature_range``
    and random eigenvectors; mu_c ~ N(0, heterogeneity^2 I). With ``common_curvature`` every
    client gets A_c = p_c * mean(A_c / p_c) (the case where FA-LD equals ULA).
    """
    rng = np.random.default_rng(seed)
    p = np.full(num_clients, 1.0 / num_clients)
    lo, hi = np.log(curvature_range[0]), np.log(curvature_range[1])
    A = np.empty((num_clients, dim, dim))
    for c in range(num_clients):
        q = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
        A[c] = p[c] * (q * np.exp(rng.uniform(lo, hi, dim))) @ q.T
    mu = heterogeneity * rng.normal(size=(num_clients, dim))
    if common_curvature:
        A = p[:, None, None] * (A / p[:, None, None]).mean(0)
    return A, mu, p


def posterior(A, mu):
    """Mean and covariance of exp(-sum_c f_c): precision sum_c A_c."""
    precision = A.sum(0)
    return np.linalg.solve(precision, np.einsum("cij,cj->i", A, mu)), np.linalg.inv(precision)


def round_map(A, mu, p, eta: float, K: int, rho: float = 0.0):
    """(M, b, Q) of one full-participation FA-LD round (module docstring), float64.

    Computed in each client's eigenbasis: G_c^j = U_c diag(g_c^j) U_c^T, g_c = 1 - eta lambda_c.
    """
    lam, U = np.linalg.eigh(A / p[:, None, None])  # (N, d), (N, d, d)
    g = 1.0 - eta * lam
    powers = g[None] ** np.arange(K)[:, None, None]  # (K, N, d): g_c^j, j < K
    gK = g ** K
    M = np.einsum("c,cik,ck,cjk->ij", p, U, gK, U)
    b = np.einsum("c,cik,ck,cjk,cj->i", p, U, 1.0 - gK, U, mu)
    own = np.einsum("c,cik,ck,cjk->ij", p, U, (powers ** 2).sum(0), U)
    shared = np.einsum("c,cik,tck,cjk->tij", p, U, powers, U)  # (K, d, d)
    Q = 2.0 * eta * (rho ** 2 * np.einsum("tij,tkj->ik", shared, shared) + (1.0 - rho ** 2) * own)
    return M, b, Q


def stationary_law(M, b, Q):
    """Stationary mean (I - M)^-1 b and covariance (discrete Lyapunov S = M S M^T + Q)."""
    return np.linalg.solve(np.eye(len(b)) - M, b), solve_discrete_lyapunov(M, Q)


def law_by_round(M, b, Q, x0, num_rounds: int):
    """Means (R+1, d) and covariances (R+1, d, d) after r = 0..R rounds from the point x0."""
    m_star, S_star = stationary_law(M, b, Q)
    lam, U = np.linalg.eigh(M)  # M is symmetric for full participation
    power = lam[None] ** np.arange(num_rounds + 1)[:, None]  # (R+1, d)
    means = m_star + np.einsum("ik,rk,jk,j->ri", U, power, U, x0 - m_star)
    S_tilde = U.T @ S_star @ U
    covs = np.einsum("ik,rkl,jl->rij", U, S_tilde * (1.0 - power[:, :, None] * power[:, None, :]), U)
    return means, covs


def gaussian_w2(means, covs, mean, cov):
    """W2(N(means[r], covs[r]), N(mean, cov)) for every r (batched, float64)."""
    lam, U = np.linalg.eigh(cov)
    root = (U * np.sqrt(lam)) @ U.T
    cross = np.linalg.eigvalsh(np.einsum("ij,rjk,kl->ril", root, covs, root))
    bures = np.trace(covs, axis1=-2, axis2=-1) + np.trace(cov) - 2 * np.sqrt(np.clip(cross, 0, None)).sum(-1)
    return np.sqrt(np.sum((means - mean) ** 2, -1) + np.clip(bures, 0, None))


def first_round_below(w2, eps: float) -> Optional[int]:
    """The first round r with W2 <= eps, or None if none within the horizon."""
    hits = np.flatnonzero(w2 <= eps)
    return int(hits[0]) if hits.size else None


class QuadraticProblem:
    """Clients, posterior and starting point of the trade-off study."""

    def __init__(self, cfg: dict, heterogeneity: float, common_curvature: bool = False):
        self.A, self.mu, self.p = quadratic_clients(
            cfg["num_clients"], cfg["dim"], heterogeneity, cfg["curvature_range"], cfg["seed"],
            common_curvature)
        self.mean, self.cov = posterior(self.A, self.mu)
        scale = math.sqrt(np.trace(self.cov))
        self.x0 = self.mean + cfg["start_sds"] * scale * np.eye(cfg["dim"])[0]
        self.max_curvature = float(np.linalg.eigvalsh(self.A / self.p[:, None, None]).max())

    def curve(self, eta: float, K: int, num_rounds: int, rho: float = 0.0):
        """Exact W2 to the posterior after r = 0..num_rounds rounds, and the stationary W2."""
        M, b, Q = round_map(self.A, self.mu, self.p, eta, K, rho)
        if np.max(np.abs(np.linalg.eigvalsh(M))) >= 1.0:
            return None, math.inf
        m_star, S_star = stationary_law(M, b, Q)
        floor = float(gaussian_w2(m_star[None], S_star[None], self.mean, self.cov)[0])
        means, covs = law_by_round(M, b, Q, self.x0, num_rounds)
        return gaussian_w2(means, covs, self.mean, self.cov), floor


def tradeoff_fixed_step(cfg: dict) -> list[dict]:
    """The paper's Fig. 1(a) question at one step size: rounds to W2 <= eps for each K
    (heterogeneous curvature and optima), the stationary W2 floor, and the floor with a
    common curvature (where FA-LD is ULA and the floor does not depend on K)."""
    eta, rows = cfg["step_size"], []
    hetero = QuadraticProblem(cfg, max(cfg["heterogeneity"]))
    common = QuadraticProblem(cfg, max(cfg["heterogeneity"]), common_curvature=True)
    for K in cfg["local_steps"]:
        w2, floor = hetero.curve(eta, K, cfg["max_rounds"])
        w2_common, floor_common = common.curve(eta, K, cfg["max_rounds"])
        rows.append({
            "K": K, "floor": floor, "floor_common": floor_common,
            "rounds": {str(eps): first_round_below(w2, eps) for eps in cfg["tolerances"]},
            "rounds_common": {str(eps): first_round_below(w2_common, eps) for eps in cfg["tolerances"]},
        })
    return rows


def tradeoff_tuned_step(cfg: dict) -> list[dict]:
    """Rounds to W2 <= eps with the step size chosen per K (the best of a log grid up to the
    stability limit 2 / max curvature), for each heterogeneity level."""
    eps, rows = cfg["tuned_tolerance"], []
    for alpha in cfg["heterogeneity"]:
        problem = QuadraticProblem(cfg, alpha)
        grid = np.geomspace(1e-5, 1.9 / problem.max_curvature, cfg["step_grid"])
        for K in cfg["tuned_local_steps"]:
            best = (None, None)
            for eta in grid:
                w2, floor = problem.curve(eta, K, cfg["max_rounds"])
                if floor >= eps:
                    continue
                r = first_round_below(w2, eps)
                if r is not None and (best[0] is None or r < best[0]):
                    best = (r, float(eta))
            rows.append({"heterogeneity": alpha, "K": K, "rounds": best[0], "step_size": best[1],
                         "gradient_steps": None if best[0] is None else best[0] * K})
    return rows


# ------------------------------------------------------------------- simulation check

def simulation_check(cfg: dict) -> dict:
    """Run ``samplers.fald`` on the quadratic clients for one K (float32, many chains) and
    compare each round's sample mean and covariance with the exact law (z-scores from the
    chains' independence), and the rounds-to-eps read off the samples with the exact ones."""
    problem = QuadraticProblem(cfg, max(cfg["heterogeneity"]))
    eta, K, chains = cfg["step_size"], cfg["check_local_steps"], cfg["check_chains"]
    eps = max(cfg["tolerances"])
    w2_exact, _ = problem.curve(eta, K, cfg["max_rounds"])
    num_rounds = 2 * first_round_below(w2_exact, eps)
    clients = [lambda x, a=jnp.asarray(a, jnp.float32), m=jnp.asarray(m, jnp.float32):
               -0.5 * (x - m) @ a @ (x - m) for a, m in zip(problem.A, problem.mu)]
    fed = samplers.fald(clients, K, eta, weights=problem.p)
    start = time.perf_counter()
    trace = samplers.run(jax.random.key(cfg["seed"]), fed, jnp.asarray(problem.x0, jnp.float32),
                         num_rounds, num_chains=chains, progress=False)
    x = np.asarray(trace.positions, np.float64)  # (chains, rounds, d); draw r = after round r + 1
    seconds = time.perf_counter() - start
    M, b, Q = round_map(problem.A, problem.mu, problem.p, eta, K)
    means, covs = law_by_round(M, b, Q, problem.x0, num_rounds)
    means, covs = means[1:], covs[1:]
    centred = x - means[None]
    z_mean = centred.mean(0) / (centred.std(0) / math.sqrt(chains))
    products = centred[..., :, None] * centred[..., None, :]  # (chains, rounds, d, d)
    z_cov = (products.mean(0) - covs) / (products.std(0) / math.sqrt(chains))
    upper = np.triu_indices(cfg["dim"])
    z = np.concatenate([z_mean.ravel(), z_cov[:, upper[0], upper[1]].ravel()])
    deviations = x - x.mean(0)
    sample_covs = np.einsum("nri,nrj->rij", deviations, deviations) / (chains - 1)
    w2_sampled = gaussian_w2(x.mean(0), sample_covs, problem.mean, problem.cov)
    sampled_round = first_round_below(w2_sampled, eps)
    return {
        "K": K, "step_size": eta, "chains": chains, "rounds": num_rounds, "eps": eps,
        "max_abs_z": float(np.abs(z).max()), "num_z": int(z.size), "z_over_4": int((np.abs(z) > 4).sum()),
        "rounds_to_eps_exact": first_round_below(w2_exact, eps),
        "rounds_to_eps_sampled": None if sampled_round is None else sampled_round + 1,
        "w2_exact_at_end": float(w2_exact[num_rounds]), "w2_sampled_at_end": float(w2_sampled[-1]),
        "seconds": round(seconds, 2),
    }


# --------------------------------------------------------------------- throughput

def logistic_clients(num_clients: int, n: int, dim: int, seed: int = 0):
    """Per-client logistic-regression data, (X (N, n, d), y (N, n)), split by the first
    feature (non-iid), with the per-datum log-likelihood and a N(0, I) log-prior."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_clients * n, dim)) / math.sqrt(dim)
    w = rng.normal(size=dim)
    y = (rng.uniform(size=len(X)) < 1 / (1 + np.exp(-X @ w))).astype(np.float32)
    order = np.argsort(X[:, 0])
    data = (jnp.asarray(X[order].reshape(num_clients, n, dim), jnp.float32),
            jnp.asarray(y[order].reshape(num_clients, n)))

    def loglik_fn(position, datum):
        eta = jnp.dot(datum[0], position)
        return datum[1] * eta - jnp.logaddexp(0.0, eta)

    def logprior_fn(position):
        return -0.5 * jnp.sum(position ** 2)

    return data, loglik_fn, logprior_fn


def throughput_problem(num_clients: int, n: int, dim: int, K: int):
    """``samplers.fald`` on the logistic clients, with its step size 0.5 / (1 + n N / 4 d)."""
    data, loglik_fn, logprior_fn = logistic_clients(num_clients, n, dim)
    eta = 0.5 / (1.0 + n * num_clients / (4.0 * dim))
    fed = samplers.fald(data, K, eta, loglik_fn=loglik_fn, logprior_fn=logprior_fn)
    return fed, data, loglik_fn, logprior_fn, eta


def round_driver(step: Callable, num_rounds: int) -> Callable:
    """``jit(drive)(key, state) -> (final state, mean |x|^2 over rounds)``: ``num_rounds``
    applications of ``step(key, state) -> (state, info)`` in a ``lax.scan``."""

    def drive(key, state):
        def body(state, k):
            state, _ = step(k, state)
            return state, jnp.sum(state.position ** 2)

        state, sq = jax.lax.scan(body, state, jax.random.split(key, num_rounds))
        return state, sq.mean()

    return jax.jit(drive)


def bare_fald_step(data, loglik_fn, logprior_fn, K: int, eta: float) -> Callable:
    """The same FA-LD round written directly: equal weights, independent noise, full client
    gradients grad log prior + N grad loglik_c; ``step(key, state) -> (state, None)``."""
    num_clients = data[1].shape[0]
    p = 1.0 / num_clients
    grad = jax.grad(lambda x, d: logprior_fn(x) + jnp.sum(jax.vmap(loglik_fn, (None, 0))(x, d)) / p)
    sd = math.sqrt(2.0 * eta / p)

    def client(x, d, key):
        def local(x, xi):
            return x + eta * grad(x, d) + sd * xi, None

        return jax.lax.scan(local, x, jax.random.normal(key, (K,) + x.shape))[0]

    def step(key, state):
        keys = jax.random.split(key, num_clients)
        finals = jax.vmap(client, (None, 0, 0))(state.position, data, keys)
        return federated.FALDState(finals.mean(0), state.count + 1), None

    return step


def single_device_cases(cfg: dict, key) -> Iterator[Case]:
    """``samplers.fald`` (vmap over clients) against the bare round, per size."""
    for num_clients, n, dim, K, rounds in cfg["sizes"]:
        fed, data, loglik_fn, logprior_fn, eta = throughput_problem(num_clients, n, dim, K)
        state = fed.init(jnp.zeros(dim))
        ours = round_driver(fed.step, rounds)
        bare = round_driver(bare_fald_step(data, loglik_fn, logprior_fn, K, eta), rounds)
        params = {"clients": num_clients, "n per client": n, "d": dim, "K": K, "rounds": rounds}
        yield Case("fald (vmap)", params, lambda o=ours: o(key, state), lambda b=bare: b(key, state),
                   "bare vmap+scan", lambda a, b: {"mean |x|²": (a[1], b[1])})


SHARDED_WORKER = """
import json, sys
from benchmarks.bench_federated import sharded_rows_here
print("RESULT " + json.dumps(sharded_rows_here(json.loads(sys.argv[1]))))
"""


def sharded_rows_here(cfg: dict) -> list[dict]:
    """In a process with several devices: time ``federated.sharded`` (clients split over all
    devices) against the single-device ``vmap`` run side by side (harness ``compare``)."""
    devices = jax.device_count()
    mesh = jax.make_mesh((devices,), ("clients",))
    key, rows = jax.random.key(0), []
    for num_clients, n, dim, K, rounds in cfg["sizes"]:
        fed = throughput_problem(num_clients, n, dim, K)[0]
        state = fed.init(jnp.zeros(dim))
        single = round_driver(fed.step, rounds)
        split = round_driver(federated.sharded(fed, mesh).step, rounds)
        params = {"devices": devices, "clients": num_clients, "n per client": n, "d": dim,
                  "K": K, "rounds": rounds}
        row = compare(Case("fald sharded", params, lambda: split(key, state),
                           lambda: single(key, state), "vmap, 1 device",
                           lambda a, b: {"mean |x|²": (a[1], b[1])}),
                      cfg["repeats"], cfg["min_time"])
        client_steps = num_clients * K * rounds
        row["sharded_client_steps_per_s"] = client_steps / row["ours_s"]
        row["vmap_client_steps_per_s"] = client_steps / row["peer_s"]
        rows.append(row)
    return rows


def sharded_rows(cfg: dict, devices: int) -> list[dict]:
    """Run :func:`sharded_rows_here` in a subprocess with ``devices`` fake CPU devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    payload = {k: cfg[k] for k in ("sizes", "repeats", "min_time")}
    result = subprocess.run([sys.executable, "-c", SHARDED_WORKER, json.dumps(payload)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=1800, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode or not lines:
        raise RuntimeError(f"sharded benchmark subprocess failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# --------------------------------------------------------------------------- reports

def _rounds_cell(r: Optional[int]) -> str:
    return "–" if r is None else str(r)


def tradeoff_markdown(cfg: dict, fixed: list[dict], tuned: list[dict], check: dict) -> str:
    """The trade-off tables and the simulation check, as markdown."""
    eps = cfg["tolerances"]
    lines = [
        f"### Rounds to W2 <= eps vs K (exact law, eta = {cfg['step_size']}, "
        f"{cfg['num_clients']} clients, d = {cfg['dim']})", "",
        f"Heterogeneous clients: scaled Hessians A_c/p_c with eigenvalues log-uniform in "
        f"{cfg['curvature_range']}, optima mu_c ~ N(0, {max(cfg['heterogeneity'])}^2 I), equal "
        f"weights; start {cfg['start_sds']} posterior sds from the mean. '–': not within "
        f"{cfg['max_rounds']} rounds (the floor is above eps). Common curvature: the same "
        "clients with A_c = p_c mean(A_c/p_c), where FA-LD is ULA.", "",
        "| K | W2 floor | " + " | ".join(f"rounds, eps={e}" for e in eps)
        + " | floor, common curvature | " + " | ".join(f"rounds common, eps={e}" for e in eps) + " |",
        "|" + "---|" * (3 + 2 * len(eps)),
    ]
    for row in fixed:
        lines.append(f"| {row['K']} | {row['floor']:.4f} | "
                     + " | ".join(_rounds_cell(row["rounds"][str(e)]) for e in eps)
                     + f" | {row['floor_common']:.4f} | "
                     + " | ".join(_rounds_cell(row["rounds_common"][str(e)]) for e in eps) + " |")
    lines += ["", f"### Rounds to W2 <= {cfg['tuned_tolerance']} with the step size tuned per K",
              "", f"Best eta of a {cfg['step_grid']}-point log grid in [1e-5, 1.9 / max curvature].",
              "", "| heterogeneity | K | rounds | eta | local steps (rounds x K) |", "|---|---|---|---|---|"]
    for row in tuned:
        eta = "–" if row["step_size"] is None else f"{row['step_size']:.3g}"
        lines.append(f"| {row['heterogeneity']} | {row['K']} | {_rounds_cell(row['rounds'])} | {eta} | "
                     f"{_rounds_cell(row['gradient_steps'])} |")
    lines += ["", f"### Simulation check (`samplers.fald` + `samplers.run`, float32, K = {check['K']})", "",
              f"{check['chains']} chains x {check['rounds']} rounds ({check['seconds']} s): per round, "
              f"sample mean and covariance vs the exact law: max |z| = {check['max_abs_z']:.2f} over "
              f"{check['num_z']} z-scores ({check['z_over_4']} above 4). Rounds to W2 <= {check['eps']}: "
              f"exact {check['rounds_to_eps_exact']}, from the samples' Gaussian fit "
              f"{_rounds_cell(check['rounds_to_eps_sampled'])}; W2 after {check['rounds']} rounds: "
              f"exact {check['w2_exact_at_end']:.4f}, sampled {check['w2_sampled_at_end']:.4f} "
              "(the sampled value carries the Monte Carlo error of the fit).", ""]
    return "\n".join(lines)


def sharded_markdown(rows: list[dict]) -> str:
    """The sharded-vs-vmap table, as markdown."""
    lines = ["### Client-steps per second: one device (vmap) vs sharded over fake CPU devices", "",
             "Timed side by side in one subprocess with `--xla_force_host_platform_device_count`; "
             "client-steps = clients x K x rounds. vmap/sharded > 1 means sharding is faster.", "",
             "| devices | clients | n per client | d | K | rounds | vmap client-steps/s | "
             "sharded client-steps/s | vmap time / sharded time | range |", "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['devices']} | {r['clients']} | {r['n per client']} | {r['d']} | {r['K']} | "
                     f"{r['rounds']} | {r['vmap_client_steps_per_s']:.3g} | "
                     f"{r['sharded_client_steps_per_s']:.3g} | **{r['ratio']:.2f}** | "
                     f"{r['ratio_min']:.2f}–{r['ratio_max']:.2f} |")
    return "\n".join(lines + [""])


def plot(results_json, out_png) -> Path:
    """Plot the trade-off tables of a ``federated.json`` report to ``out_png`` (matplotlib Agg):
    the stationary W2 floor vs K, rounds to eps vs K at a fixed step, and with a tuned step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    cfg = json.loads(Path(results_json).read_text())["config"]
    fixed, tuned = cfg["tradeoff_fixed"], cfg["tradeoff_tuned"]
    Ks = [r["K"] for r in fixed]
    fig, (floor_ax, fixed_ax, tuned_ax) = plt.subplots(1, 3, figsize=(14, 4.2))
    floor_ax.plot(Ks, [r["floor"] for r in fixed], "o-", color="C3", label="heterogeneous curvature")
    floor_ax.plot(Ks, [r["floor_common"] for r in fixed], "k--", label="common curvature (= ULA)")
    for i, eps in enumerate(cfg["tolerances"]):
        floor_ax.axhline(eps, color=f"C{i}", lw=0.8, ls=":")
    floor_ax.set(xscale="log", yscale="log", xlabel="local steps K", ylabel="stationary W2 to posterior",
                 title=f"W2 floor, eta = {cfg['step_size']} (dotted: eps)")
    for i, eps in enumerate(cfg["tolerances"]):
        pts = [(r["K"], r["rounds"][str(eps)]) for r in fixed if r["rounds"][str(eps)] is not None]
        fixed_ax.plot(*zip(*pts), "o-", color=f"C{i}", label=f"eps = {eps}")
    common = [(r["K"], r["rounds_common"][str(cfg["tolerances"][-1])]) for r in fixed]
    fixed_ax.plot(*zip(*common), "k--", lw=1, label=f"common curvature, eps = {cfg['tolerances'][-1]}")
    fixed_ax.set(xscale="log", yscale="log", xlabel="local steps K", ylabel="rounds to W2 <= eps",
                 title=f"fixed eta = {cfg['step_size']} (curves stop at floor > eps)")
    for j, alpha in enumerate(cfg["heterogeneity"]):
        pts = [(r["K"], r["rounds"]) for r in tuned if r["heterogeneity"] == alpha and r["rounds"]]
        tuned_ax.plot(*zip(*pts), "s-", color=f"C{4 + j}", label=f"optima spread {alpha}")
    tuned_ax.set(xscale="log", yscale="log", xlabel="local steps K", ylabel="rounds to W2 <= eps",
                 title=f"eta tuned per K, eps = {cfg['tuned_tolerance']}")
    tuned_ax.yaxis.set_major_formatter(ScalarFormatter())
    tuned_ax.yaxis.set_minor_formatter(ScalarFormatter())
    for ax in (floor_ax, fixed_ax, tuned_ax):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"FA-LD, {cfg['num_clients']} quadratic clients in d = {cfg['dim']}: exact law, no sampling")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- cases

def cases(cfg: dict) -> Iterator[Case]:
    """The exact trade-off and the sharded timings first (recorded in ``cfg`` and in
    ``NOTES``, which the harness writes after the cases have run), then the timed cases."""
    global NOTES
    start = time.perf_counter()
    cfg["tradeoff_fixed"] = tradeoff_fixed_step(cfg)
    cfg["tradeoff_tuned"] = tradeoff_tuned_step(cfg)
    cfg["tradeoff_s"] = round(time.perf_counter() - start, 1)
    print(f"  trade-off (exact law): {cfg['tradeoff_s']} s", flush=True)
    cfg["simulation_check"] = simulation_check(cfg)
    print(f"  simulation check: max |z| {cfg['simulation_check']['max_abs_z']:.2f}", flush=True)
    cfg["sharded"] = []
    for devices in cfg["device_counts"]:
        cfg["sharded"] += sharded_rows(cfg, devices)
        print(f"  sharded over {devices} fake devices: vmap/sharded "
              + ", ".join(f"{r['ratio']:.2f}" for r in cfg["sharded"][-len(cfg['sizes']):]), flush=True)
    NOTES = "\n".join([BASE_NOTES, tradeoff_markdown(cfg, cfg["tradeoff_fixed"], cfg["tradeoff_tuned"],
                                                     cfg["simulation_check"]),
                       sharded_markdown(cfg["sharded"]),
                       "### `samplers.fald` vs a bare round (one device, this process)"])
    yield from single_device_cases(cfg, jax.random.key(0))


if __name__ == "__main__":
    if sys.argv[1:2] == ["plot"]:
        print(plot(*sys.argv[2:4]))
    else:
        sys.exit(main({NAME: __name__}))

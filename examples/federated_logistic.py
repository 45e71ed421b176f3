"""Federated Bayesian logistic regression with FA-LD: more local steps, fewer rounds, more bias.

A logistic regression (n = 500 points, d = 3, N(0, 2^2 I) prior) is split over 10 clients
*non-iid*: the data are sorted by their first feature, so each client sees a different slice
of the input space and has its own local optimum. ``samplers.fald`` (Deng et al., arXiv
2112.05120) runs K local Langevin steps per client between communication rounds, K in
{1, 5, 20}, for the same number of rounds. The posterior mean estimate (after burn-in) is
compared with the importance-sampling reference of
``samplers.targets.bayesian_logistic_regression``.

What to expect: at equal rounds, K = 1 (one Langevin step per round, i.e. ULA) mixes slowly
per round, so its error is dominated by Monte Carlo noise; larger K mixes faster per round but
the clients drift towards their own optima between rounds, which biases the stationary law by
O(K eta) (the heterogeneity term of the paper's Theorem 4.7). The table prints the error, its
Monte Carlo standard error and the communication used; the plot shows the error of the running
estimate over rounds.

    python examples/federated_logistic.py [--out DIR]      # about 30 s on a laptop CPU
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import arviz as az  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import samplers  # noqa: E402

NUM_CLIENTS = 10
LOCAL_STEPS = (1, 5, 20)
DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def non_iid_clients(n: int = 500, dim: int = 3, seed: int = 0):
    """The target (with its reference posterior) and the client data (X (N, n/N, d), y (N, n/N)),
    split by sorting on the first feature."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim))
    w_true = np.array([1.0, -0.5, 0.25])[:dim]
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ w_true))).astype(float)
    target = samplers.targets.bayesian_logistic_regression(X, y, prior_scale=2.0)
    order = np.argsort(X[:, 0])
    clients = (X[order].reshape(NUM_CLIENTS, -1, dim), y[order].reshape(NUM_CLIENTS, -1))
    return target, clients


def run_fald(target, clients, local_steps: int, step_size: float, num_rounds: int,
             num_chains: int, seed: int = 1) -> samplers.Trace:
    """FA-LD with independent noise and full client gradients, one draw per round."""
    fed = samplers.fald(clients, local_steps=local_steps, step_size=step_size,
                        loglik_fn=target.loglik_fn, logprior_fn=target.logprior_fn)
    return samplers.run(jax.random.key(seed), fed, jnp.zeros(target.dim), num_rounds,
                        num_chains=num_chains)


def mean_and_se(draws: np.ndarray):
    """Posterior mean of (chain, draw, d) draws and its Monte Carlo standard error (ArviZ ESS)."""
    ess = np.array([float(az.ess(draws[..., i])) for i in range(draws.shape[-1])])
    return draws.mean((0, 1)), draws.std((0, 1)) / np.sqrt(ess)


def running_error(draws: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|running mean over chains and rounds so far - reference| for each round (draws (c, r, d))."""
    per_round = draws.mean(0)
    running = np.cumsum(per_round, 0) / np.arange(1, len(per_round) + 1)[:, None]
    return np.linalg.norm(running - reference, axis=-1)


def plot(errors: dict, burn_in: int, ref_se: float, path: Path) -> Path:
    """Error of the running posterior-mean estimate vs communication rounds, one line per K."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for K, err in errors.items():
        ax.plot(np.arange(burn_in + 1, burn_in + 1 + len(err)), err, label=f"K = {K}")
    ax.axhline(ref_se, color="k", ls=":", lw=1, label="reference's own MC error")
    ax.set(yscale="log", xlabel="communication round",
           ylabel="|posterior mean estimate - reference|",
           title=f"FA-LD, {NUM_CLIENTS} non-iid clients (logistic regression)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the plot")
    parser.add_argument("--rounds", type=int, default=800)
    parser.add_argument("--burn-in", type=int, default=200)
    parser.add_argument("--chains", type=int, default=16)
    args = parser.parse_args(argv)

    target, clients = non_iid_clients()
    reference = np.asarray(target.mean, np.float64)
    ref_se = float(np.linalg.norm(target.reference["mean_se"]))
    # step size: 0.1 / the largest curvature of the posterior at its mode (Laplace)
    curvature = float(np.linalg.eigvalsh(np.linalg.inv(target.reference["laplace_cov"])).max())
    step_size = 0.1 / curvature
    print(f"reference posterior mean {np.round(reference, 4)} (importance sampling, se {ref_se:.1e}); "
          f"eta = {step_size:.2e}, {args.rounds} rounds, {args.chains} chains, burn-in {args.burn_in}")
    header = (f"{'K':>3} {'local steps':>12} {'MB exchanged':>13} {'|error|':>9} {'MC se':>8} "
              f"{'max |error| / se':>17}  {'verdict':<24} error per coordinate")
    print(header)
    print("-" * len(header))
    errors = {}
    for K in LOCAL_STEPS:
        trace = run_fald(target, clients, K, step_size, args.rounds, args.chains)
        draws = np.asarray(trace.positions, np.float64)[:, args.burn_in:]
        mean, se = mean_and_se(draws)
        err = mean - reference
        total_se = np.hypot(se, target.reference["mean_se"])
        megabytes = float(np.sum(trace.stats["bytes_exchanged"])) / args.chains / 1e6
        z = float(np.max(np.abs(err) / total_se))
        verdict = "biased (> 5 se)" if z > 5 else "within Monte Carlo error"
        print(f"{K:>3} {K * args.rounds:>12} {megabytes:>13.3f} {np.linalg.norm(err):>9.4f} "
              f"{np.linalg.norm(se):>8.4f} {z:>17.1f}  {verdict:<24} {np.round(err, 4)}")
        errors[K] = running_error(draws, reference)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"plot: {plot(errors, args.burn_in, ref_se, args.out / 'federated_logistic.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

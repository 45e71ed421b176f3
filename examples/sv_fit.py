"""Fit a stochastic volatility model by PPG score ascent (Fisher's identity), then plot the
parameter traces and the smoothed log-volatility E[x_t | y] against the simulated x_t.

    x_0 ~ N(mu, sigma^2 / (1 - rho^2)),  x_{t+1} = mu + rho (x_t - mu) + sigma u_t,
    y_t ~ N(0, exp(x_t)).

Parameters are learned unconstrained: theta = (mu, atanh(rho), log sigma).

    python examples/sv_fit.py              # --quick (the default): about 20-30 s on 2 CPU cores
    python examples/sv_fit.py --no-quick   # T = 1,000, 1,000 iterations
    python examples/sv_fit.py --out examples/out
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from samplers import configure_xla, smc  # noqa: E402

TRUTH = {"mu": -1.0, "rho": 0.9, "sigma": 0.3}
START = {"mu": 0.0, "rho": 0.5, "sigma": 0.6}
QUICK = {"steps": 500, "particles": 16, "iterations": 400, "smoothing_particles": 128}
FULL = {"steps": 1000, "particles": 32, "iterations": 1000, "smoothing_particles": 256}


def sv_model(theta):
    """The model at unconstrained parameters {"mu", "z" = atanh(rho), "log_sigma"}."""
    return smc.StochasticVolatility(theta["mu"], jnp.tanh(theta["z"]), jnp.exp(theta["log_sigma"]))


def unconstrained(p):
    return {"mu": jnp.float32(p["mu"]), "z": jnp.arctanh(jnp.float32(p["rho"])),
            "log_sigma": jnp.log(jnp.float32(p["sigma"]))}


def natural(theta):
    """(mu, rho, sigma) from unconstrained values (arrays keep their iteration axis)."""
    return {"mu": np.asarray(theta["mu"]), "rho": np.tanh(np.asarray(theta["z"])),
            "sigma": np.exp(np.asarray(theta["log_sigma"]))}


def smoothed_means(key, model, ys, num_particles):
    """E[x_t | y] for every t by PaRIS: the term at step t puts x_{t+1} in slot t + 1 of a
    length-T vector, so the smoothed sum is the vector of smoothing means. Exact backward
    draws (O(N^2) per step, cheap at this N) compile faster than accept-reject."""
    T = ys.shape[0]

    def initial(x0):
        return jnp.zeros(T, x0.dtype).at[0].set(x0[0])

    def additive(t, x, x_next):
        return jnp.zeros(T, x_next.dtype).at[t + 1].set(x_next[0])

    res = smc.paris(key, model, ys, additive, num_particles, initial_fn=initial, backward="exact")
    return np.asarray(res.estimate), np.asarray(res.filtering_means[:, 0])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for the plot (default: a new temporary directory)")
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction, default=True,
                        help="small sizes, well under a minute on 2 CPU cores (default)")
    parser.add_argument("--steps", type=int, help="observations T")
    parser.add_argument("--particles", type=int, help="PPG particles N per sweep")
    parser.add_argument("--iterations", type=int, help="score-ascent iterations")
    parser.add_argument("--smoothing-particles", type=int, help="PaRIS particles for E[x_t | y]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    sizes.update({k: v for k, v in vars(args).items() if k in sizes and v is not None})
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="sv_fit_"))

    start = time.perf_counter()
    k_data, k_fit, k_smooth = jax.random.split(jax.random.key(args.seed), 3)
    xs, ys = smc.simulate(k_data, sv_model(unconstrained(TRUTH)), sizes["steps"])
    n_iter = sizes["iterations"]
    # Adam on the score, step 0.2 k^-0.6 (Robbins-Monro; 0.05 k^-0.6 is still far from the
    # truth after 400 iterations from this start); fit carries the PPG reference path from
    # one iteration to the next
    optimizer = optax.adam(lambda k: 0.2 * (k + 1.0) ** -0.6)
    fit = smc.fit(k_fit, sv_model, ys, unconstrained(START), estimator="ppg", optimizer=optimizer,
                  num_iterations=n_iter, num_particles=sizes["particles"], backward="exact")
    history = natural(fit.params_history)
    # the estimate: the mean of the last half of the iterates (the noise averages out)
    estimate = {k: float(v[n_iter // 2:].mean()) for k, v in history.items()}
    fitted = sv_model(jax.tree.map(lambda v: v[n_iter // 2:].mean(0), fit.params_history))
    smoothed, filtered = smoothed_means(k_smooth, fitted, ys, sizes["smoothing_particles"])
    seconds = time.perf_counter() - start

    print(f"T = {sizes['steps']}, N = {sizes['particles']}, {n_iter} iterations, "
          f"{seconds:.1f} s (compilation included)")
    print(f"{'':>8}{'truth':>10}{'start':>10}{'estimate':>10}")
    for name in TRUTH:
        print(f"{name:>8}{TRUTH[name]:>10.3f}{START[name]:>10.3f}{estimate[name]:>10.3f}")
    x_true = np.asarray(xs[:, 0])
    se_mu = TRUTH["sigma"] / (1.0 - TRUTH["rho"]) / np.sqrt(sizes["steps"])
    print(f"T = {sizes['steps']} pins mu down to about +-{se_mu:.2f} (the standard error of an "
          f"AR(1) mean); the simulated x_t average {x_true.mean():.3f}")
    rmse = {"smoothed": float(np.sqrt(np.mean((smoothed - x_true) ** 2))),
            "filtered": float(np.sqrt(np.mean((filtered - x_true) ** 2)))}
    print(f"RMSE against the simulated x_t: smoothed {rmse['smoothed']:.3f}, "
          f"filtered {rmse['filtered']:.3f}")

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.6), gridspec_kw={"width_ratios": [1, 1, 1, 3]})
    for ax, name in zip(axes, TRUTH):
        ax.plot(np.arange(1, n_iter + 1), history[name], lw=0.8, label="iterate")
        ax.axhline(TRUTH[name], color="k", ls="--", lw=1, label="truth")
        ax.set_title(name)
        ax.set_xlabel("iteration")
    axes[0].legend()
    t = np.arange(sizes["steps"])
    axes[3].plot(t, x_true, color="k", lw=0.8, label="simulated $x_t$")
    axes[3].plot(t, smoothed, lw=1.0, label="PaRIS $E[x_t | y]$")
    axes[3].plot(t, filtered, lw=0.6, alpha=0.7, label="filter $E[x_t | y_{0:t}]$")
    axes[3].set_xlabel("t")
    axes[3].set_title("log-volatility at the fitted parameters")
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sv_fit.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"plot: {path}")
    return {"truth": TRUTH, "estimate": estimate, "seconds": seconds, "plot": path,
            "rmse": rmse, "sizes": sizes}


if __name__ == "__main__":
    configure_xla()  # before any JAX computation: PaRIS's exact backward draws (samplers/_xla.py)
    main()

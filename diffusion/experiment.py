"""The diffusion sampling experiment runner (``samplers diffusion ...``; wire
``diffusion.experiment.main(argv)`` into the CLI).

For each solver and step count: draw samples from the same prior points x_T, measure their
distance to exact samples (sliced Wasserstein, MMD), the paired RMS error against a fine
reference solve from the same x_T (RK4, log-SNR grid; an upper bound on W2 between the two
laws with no sampling-noise floor, notes B6), the exact W2 for Gaussian targets (the ODE
solvers are affine there, :mod:`diffusion.demo`), and the number of score evaluations (NFE).
Writes ``results.json``, ``convergence.png`` (error vs NFE, log-log, with fitted slopes) and,
for 2-d targets, ``samples.png``.

Targets: ``ring`` (alias ``gmm2d``: 8 Gaussians of variance 0.1 on a circle of radius 4),
``grid`` (3 x 3 Gaussians, spacing 2, variance 0.05), ``gaussian`` (d = ``--dim``, eigenvalues
geometric from 0.01 to 1 in a random basis), or ``file:PATH`` (a .npy or .csv of points: the
score is trained first by DSM, :func:`diffusion.training.train_score`).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import scores, solvers
from .demo import gaussian_sampling_w2
from .sde import VPSDE

__all__ = ["main", "run_experiment", "make_target"]


def _mixture_target(means, var, dim=2):
    k = len(means)
    w = np.full(k, 1.0 / k)
    covs = np.stack([var * np.eye(dim)] * k)

    def draw(rng, n):
        idx = rng.integers(0, k, n)
        return means[idx] + np.sqrt(var) * rng.standard_normal((n, dim))

    return {"weights": w, "means": means, "covs": covs, "draw": draw, "kind": "mixture"}


def make_target(name: str, sde, *, dim: int = 16, seed: int = 0, train_steps: int = 4000):
    """(score, exact_draw(rng, n) or None, info dict) for a built-in target name."""
    if name in ("ring", "gmm2d"):
        ang = 2 * np.pi * np.arange(8) / 8
        t = _mixture_target(4.0 * np.stack([np.cos(ang), np.sin(ang)], 1), 0.1)
    elif name == "grid":
        g = np.array([-2.0, 0.0, 2.0])
        t = _mixture_target(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), 0.05)
    elif name == "gaussian":
        rng = np.random.default_rng(seed)
        q = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        cov = q @ np.diag(np.geomspace(0.01, 1.0, dim)) @ q.T
        mean = rng.standard_normal(dim) * 0.5
        chol = np.linalg.cholesky(cov)
        return (scores.gaussian(sde, mean, cov),
                lambda r, n: mean + r.standard_normal((n, dim)) @ chol.T,
                {"kind": "gaussian", "mean": mean, "cov": cov, "dim": dim})
    elif name.startswith("file:"):
        import optax

        from . import nets, training
        path = name[5:]
        data = np.load(path) if path.endswith(".npy") else np.loadtxt(path, delimiter=",")
        data = np.asarray(data, np.float32)
        if data.ndim != 2:
            raise ValueError(f"the data file must hold a (num_points, d) array, got shape {data.shape}")
        model = nets.mlp((128, 128))
        params = training.train_score(jax.random.key(seed), data, sde, model=model,
                                      steps=train_steps, optimizer=optax.adam(2e-3))
        score = training.learned_score(sde, model, params)
        score.dim = data.shape[1]
        rng = np.random.default_rng(seed)
        return score, (lambda r, n: data[r.integers(0, len(data), n)]), {"kind": "data",
                                                                         "dim": data.shape[1]}
    else:
        raise ValueError(f"target must be one of ring, gmm2d, grid, gaussian, file:PATH; got {name!r}")
    score = scores.gaussian_mixture(sde, t["weights"], t["means"], t["covs"])
    return score, t["draw"], {"kind": "mixture", "dim": 2}


def run_experiment(target: str = "ring", solver_names: Sequence[str] = ("euler", "heun", "dpm_solver_2"),
                   steps: Sequence[int] = (5, 10, 20, 50, 100), *, num_samples: int = 2000,
                   reference_steps: int = 1000, dim: int = 16, seed: int = 0,
                   progress: bool = True, float64: bool = True) -> dict:
    """Run the experiment and return its results (a JSON-able dict); see the module docstring."""
    from samplers.diagnostics import mmd
    from samplers.sliced import sliced_wasserstein

    for s in solver_names:
        solvers._check_solver(s, solvers.SOLVERS)
    for k in steps:
        solvers._check_num_steps(k)
    sde = VPSDE()
    with jax.enable_x64(float64):
        score, draw, info = make_target(target, sde, dim=dim, seed=seed)
        d = info["dim"]
        rng = np.random.default_rng(seed)
        dtype = jnp.float64 if float64 else jnp.float32
        x_T = jnp.asarray(rng.standard_normal((num_samples, d)), dtype)
        exact = jnp.asarray(draw(rng, num_samples), dtype)
        ref = solvers.solve_ode(x_T, sde, score, solver="rk4", num_steps=reference_steps,
                                time_grid="logsnr")
        sw_key = jax.random.key(seed + 1)
        floor = float(sliced_wasserstein(jnp.asarray(draw(rng, num_samples), dtype), exact,
                                         key=sw_key, num_projections=200))
        rows, samples = [], {}
        work = [(s, k) for s in solver_names for k in steps]
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(work), desc="diffusion", unit="run")
        for s, k in work:
            start = time.perf_counter()
            if s in solvers.SDE_SOLVERS:
                x = solvers.solve_sde(jax.random.key(seed + 2), x_T, sde, score, solver=s,
                                      num_steps=k)
            else:
                x = solvers.solve_ode(x_T, sde, score, solver=s, num_steps=k)
            x.block_until_ready()
            row = {"solver": s, "num_steps": k, "nfe": solvers.nfe(s, k),
                   "seconds": time.perf_counter() - start,
                   "sw": float(sliced_wasserstein(x, exact, key=sw_key, num_projections=200)),
                   "mmd2": float(mmd(x, exact)),
                   "paired_rms": float(jnp.sqrt(jnp.mean(jnp.sum((x - ref) ** 2, -1))))}
            if info["kind"] == "gaussian" and s in solvers.ODE_SOLVERS:
                row["w2"] = gaussian_sampling_w2(sde, info["mean"], info["cov"], solver=s,
                                                 num_steps=k)
            rows.append(row)
            samples[(s, k)] = np.asarray(x)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    slopes = {}
    for s in solver_names:
        r = [row for row in rows if row["solver"] == s]
        if len(r) >= 2 and s in solvers.ODE_SOLVERS:
            slopes[s] = float(np.polyfit(np.log([row["nfe"] for row in r]),
                                         np.log([max(row["paired_rms"], 1e-300) for row in r]), 1)[0])
    return {"target": target, "dim": d, "num_samples": num_samples, "sde": "VPSDE(linear)",
            "reference": f"rk4, {reference_steps} log-SNR steps", "sw_noise_floor": floor,
            "results": rows, "slopes_paired_rms_vs_nfe": slopes,
            "_samples": samples, "_exact": np.asarray(exact)}


def _plots(res, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for s in dict.fromkeys(r["solver"] for r in res["results"]):
        r = [row for row in res["results"] if row["solver"] == s]
        slope = res["slopes_paired_rms_vs_nfe"].get(s)
        label = s if slope is None else f"{s} (slope {slope:.2f})"
        ax.loglog([row["nfe"] for row in r], [row["paired_rms"] for row in r], "o-", label=label)
    ax.set_xlabel("NFE (score evaluations)")
    ax.set_ylabel("paired RMS error vs reference")
    ax.set_title(f"{res['target']}: error vs NFE")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "convergence.png"), dpi=120)
    plt.close(fig)
    if res["dim"] == 2:
        keys = list(res["_samples"])
        solvers_ = list(dict.fromkeys(k[0] for k in keys))
        fig, axes = plt.subplots(1, len(solvers_) + 1, figsize=(3 * (len(solvers_) + 1), 3),
                                 sharex=True, sharey=True)
        axes[0].scatter(*res["_exact"].T, s=1)
        axes[0].set_title("exact")
        for ax, s in zip(axes[1:], solvers_):
            k = max(kk for ss, kk in keys if ss == s)
            ax.scatter(*res["_samples"][(s, k)].T, s=1)
            ax.set_title(f"{s}, {k} steps")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "samples.png"), dpi=120)
        plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``samplers diffusion --target ring --solvers euler,heun,dpm_solver_2 --steps 5,10,20
    --out runs/ring``."""
    p = argparse.ArgumentParser(prog="samplers diffusion", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="ring")
    p.add_argument("--solvers", default="euler,heun,dpm_solver_2")
    p.add_argument("--steps", default="5,10,20,50,100")
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--reference-steps", type=int, default=1000)
    p.add_argument("--dim", type=int, default=16, help="dimension of the gaussian target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/diffusion")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    solver_names = [s for s in a.solvers.split(",") if s]
    try:
        steps = [int(s) for s in a.steps.split(",") if s]
    except ValueError:
        p.error(f"--steps must be a comma-separated list of integers, got {a.steps!r}")
    res = run_experiment(a.target, solver_names, steps, num_samples=a.num_samples,
                         reference_steps=a.reference_steps, dim=a.dim, seed=a.seed,
                         progress=not a.no_progress)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({k: v for k, v in res.items() if not k.startswith("_")}, f, indent=2)
    _plots(res, a.out)
    for row in res["results"]:
        print(f"{row['solver']:18s} steps {row['num_steps']:4d} nfe {row['nfe']:4d} "
              f"paired {row['paired_rms']:.3e} sw {row['sw']:.3f}"
              + (f" w2 {row['w2']:.3e}" if "w2" in row else ""))
    print(f"sw noise floor {res['sw_noise_floor']:.3f}; wrote {a.out}/results.json")
    return 0

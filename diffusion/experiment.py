"""The diffusion sampling experiment runner (``samplers diffusion ...``).

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

The sliced Wasserstein distance "sw" of a run is SW_2 between its ``num_samples`` points and
one fixed set of ``num_samples`` exact draws, with 200 random directions drawn from one fixed
key. Between two finite samples it is not 0 even for an exact sampler, and it is noisy (sd
about a quarter of its mean at n = 2000). ``sw_noise_floor`` is what an exact sampler scores
under exactly that estimator: the mean, over ``floor_draws`` fresh sets of ``num_samples``
exact draws, of their SW_2 to the same exact set with the same directions
(``sw_noise_floor_sd``: the spread of one such score). A run within about two sd of the
floor is indistinguishable from exact sampling by this measure. ``sw_reference`` is the same
score for the fine reference solve from the runs' own x_T.

Timing, per run: "seconds" is the wall time of drawing the samples (the solver call until
its result is ready), with the solver's program already compiled; "compile_seconds" (the
first run of each solver only; the step count is traced, so one compilation serves every
step count) is the extra wall time of that solver's first, compiling call; "metrics_seconds"
is the time spent scoring the run (SW, MMD, paired error, exact W2).
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

__all__ = ["main", "run_experiment", "make_target", "TARGETS"]

TARGETS = ("ring", "gmm2d", "grid", "gaussian")  # and "file:PATH"
GRIDS = ("default",) + solvers.TIME_GRIDS
NUM_PROJECTIONS = 200


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


def _check_target(name) -> None:
    if not isinstance(name, str) or not (name in TARGETS or name.startswith("file:")):
        raise ValueError(f"target must be one of {', '.join(TARGETS)} or file:PATH; got {name!r}")
    if name.startswith("file:") and not os.path.isfile(name[5:]):
        raise ValueError(f"target {name!r}: no file {name[5:]!r}")


def _median_distance(points: np.ndarray, max_points: int = 2000) -> float:
    """Median pairwise Euclidean distance of (at most ``max_points`` of) ``points``."""
    from scipy.spatial.distance import pdist

    return float(np.median(pdist(np.asarray(points, np.float64)[:max_points])))


def _timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def run_experiment(target: str = "ring", solver_names: Sequence[str] = ("euler", "heun", "dpm_solver_2"),
                   steps: Sequence[int] = (5, 10, 20, 50, 100), *, num_samples: int = 2000,
                   reference_steps: int = 1000, dim: int = 16, seed: int = 0,
                   progress: bool = True, float64: bool = True, time_grid: Optional[str] = None,
                   floor_draws: int = 20) -> dict:
    """Run the experiment and return its results (a JSON-able dict, plus the samples under
    keys starting with "_"); see the module docstring.

    ``time_grid``: None (each solver's default: log-SNR for the exponential integrators,
    uniform otherwise) or one of :data:`diffusion.solvers.TIME_GRIDS`. ``floor_draws``: the
    number of fresh exact samples that estimate the SW noise floor (>= 2).
    """
    from samplers.diagnostics import mmd
    from samplers.sliced import sliced_wasserstein

    _check_target(target)
    for s in solver_names:
        solvers._check_solver(s, solvers.SOLVERS)
    for k in steps:
        solvers._check_num_steps(k)
    if time_grid is not None and time_grid not in solvers.TIME_GRIDS:
        raise ValueError(f"time_grid must be None or one of {', '.join(solvers.TIME_GRIDS)}; "
                         f"got {time_grid!r}")
    if isinstance(floor_draws, bool) or not isinstance(floor_draws, (int, np.integer)) \
            or floor_draws < 2:
        raise ValueError(f"floor_draws must be an integer >= 2, got {floor_draws!r}")
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

        def sw(x):  # the one estimator of every SW number reported: same n, key, directions
            return sliced_wasserstein(sw_key, x, exact, num_projections=NUM_PROJECTIONS)

        fresh = jnp.asarray(np.stack([draw(rng, num_samples) for _ in range(floor_draws)]), dtype)
        floor_values = np.asarray(sw(fresh), np.float64)  # a batch of pairs, same directions
        bandwidth = _median_distance(np.asarray(exact))
        mmd_fixed = jax.jit(mmd, static_argnums=2)
        rows, samples, compiled = [], {}, set()
        work = [(s, k) for s in solver_names for k in steps]
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(work), desc="diffusion", unit="run")
        for s, k in work:
            if s in solvers.SDE_SOLVERS:
                def solve(s=s, k=k):
                    return solvers.solve_sde(jax.random.key(seed + 2), x_T, sde, score, solver=s,
                                             num_steps=k, time_grid=time_grid)
            else:
                def solve(s=s, k=k):
                    return solvers.solve_ode(x_T, sde, score, solver=s, num_steps=k,
                                             time_grid=time_grid)
            first = None
            if s not in compiled:  # the solver's first call compiles (for every step count)
                _, first = _timed(solve)
                compiled.add(s)
            x, seconds = _timed(solve)
            start = time.perf_counter()
            row = {"solver": s, "num_steps": k, "nfe": solvers.nfe(s, k), "seconds": seconds,
                   "sw": float(sw(x)),
                   "mmd2": float(mmd_fixed(x, exact, bandwidth)),
                   "paired_rms": float(jnp.sqrt(jnp.mean(jnp.sum((x - ref) ** 2, -1))))}
            if first is not None:
                row["compile_seconds"] = max(first - seconds, 0.0)
            if info["kind"] == "gaussian" and s in solvers.ODE_SOLVERS:
                row["w2"] = gaussian_sampling_w2(sde, info["mean"], info["cov"], solver=s,
                                                 num_steps=k, time_grid=time_grid)
            row["metrics_seconds"] = time.perf_counter() - start
            rows.append(row)
            samples[(s, k)] = np.asarray(x)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        sw_reference = float(sw(ref))
    slopes = {}
    for s in solver_names:
        r = [row for row in rows if row["solver"] == s]
        if len(r) >= 2 and s in solvers.ODE_SOLVERS:
            slopes[s] = float(np.polyfit(np.log([row["nfe"] for row in r]),
                                         np.log([max(row["paired_rms"], 1e-300) for row in r]), 1)[0])
    return {"target": target, "dim": d, "num_samples": num_samples, "sde": "VPSDE(linear)",
            "time_grid": time_grid or "default",
            "reference": f"rk4, {reference_steps} log-SNR steps",
            "sw_estimator": f"SW_2 to one fixed set of {num_samples} exact draws, "
                            f"{NUM_PROJECTIONS} random directions from one fixed key",
            "sw_noise_floor": float(floor_values.mean()),
            "sw_noise_floor_sd": float(floor_values.std(ddof=1)),
            "sw_noise_floor_draws": int(floor_draws),
            "sw_reference": sw_reference,
            "mmd_bandwidth": bandwidth,
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
        fig, axes = plt.subplots(1, len(solvers_) + 1, figsize=(3 * (len(solvers_) + 1), 3.2),
                                 sharex=True, sharey=True)
        axes[0].scatter(*res["_exact"].T, s=1, color="C1")
        axes[0].set_title("exact")
        for ax, s in zip(axes[1:], solvers_):
            k = max(kk for ss, kk in keys if ss == s)
            ax.scatter(*res["_samples"][(s, k)].T, s=1, color="C0")
            ax.set_title(f"{s}, {k} steps")
        for ax in axes:
            ax.set_xlabel("$x_1$")
        axes[0].set_ylabel("$x_2$")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "samples.png"), dpi=120)
        plt.close(fig)


_DESCRIPTION = """Compare diffusion samplers on a target with known exact samples.

For each solver and step count: draw samples from the same prior points x_T and score them
against exact draws: sliced Wasserstein (sw) and MMD, the paired RMS error against a fine
RK4 reference solve from the same x_T, the exact W2 for the gaussian target (ODE solvers),
and the number of score evaluations (NFE)."""


def _epilog() -> str:
    import textwrap

    def wrap(names, indent):
        pad = " " * indent
        return textwrap.fill(", ".join(names), 88, initial_indent=pad,
                             subsequent_indent=pad).lstrip()

    ode = wrap(solvers.ODE_SOLVERS, 26)
    sde = wrap(solvers.SDE_SOLVERS, 26)
    return f"""targets (--target):
  ring, gmm2d    8 Gaussians of variance 0.1 on a circle of radius 4 (gmm2d: the same)
  grid           3 x 3 Gaussians, spacing 2, variance 0.05
  gaussian       d = --dim, eigenvalues geometric from 0.01 to 1 in a random basis
  file:PATH      a .npy or .csv of points (n, d); the score is trained first by DSM

solvers (--solvers, comma-separated):
  ODE (probability flow): {ode}
  SDE (reverse-time):     {sde}

time grids (--grid):
  default        each solver's own: logsnr for ddim and the dpm_solver/li_accelerated
                 integrators, uniform for the others
  {", ".join(solvers.TIME_GRIDS)}

output: results.json, convergence.png and, for 2-d targets, samples.png in --out.
  "sw" is SW_2 between a run's samples and one fixed set of --num-samples exact draws
  ({NUM_PROJECTIONS} random directions, one fixed key). "sw noise floor" is what an exact
  sampler scores under that same estimator: the mean (+- sd) over fresh exact samples of
  the same size, against the same exact set, with the same directions. A run within about
  two sd of the floor cannot be told from exact sampling by SW; "reference" is the score of
  the fine RK4 reference solve from the runs' own prior draws.
  "seconds" is the wall time of a run's sampling (until its result is ready), compiled;
  "compile_seconds" (each solver's first run) the extra time of its compiling first call;
  "metrics_seconds" the time spent scoring the run.

example: samplers diffusion --target ring --solvers euler,heun,dpm_solver_2 --steps 5,10,20
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samplers diffusion", description=_DESCRIPTION,
                                epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="ring", metavar="TARGET",
                   help=f"one of {', '.join(TARGETS)} or file:PATH (default: ring)")
    p.add_argument("--solvers", default="euler,heun,dpm_solver_2", metavar="S1,S2,...",
                   help="comma-separated solver names, see below (default: euler,heun,dpm_solver_2)")
    p.add_argument("--steps", default="5,10,20,50,100", metavar="K1,K2,...",
                   help="comma-separated step counts, each >= 1 (default: 5,10,20,50,100)")
    p.add_argument("--grid", default="default", choices=GRIDS,
                   help="time grid of the runs (default: each solver's own)")
    p.add_argument("--num-samples", type=int, default=2000, help="samples per run (>= 2)")
    p.add_argument("--reference-steps", type=int, default=1000,
                   help="RK4 log-SNR steps of the reference solve (>= 1)")
    p.add_argument("--floor-draws", type=int, default=20,
                   help="fresh exact samples that estimate the SW noise floor (>= 2)")
    p.add_argument("--dim", type=int, default=16, help="dimension of the gaussian target (>= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/diffusion", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``samplers diffusion --target ring --solvers euler,heun,dpm_solver_2 --steps 5,10,20
    --out runs/ring``; ``samplers diffusion --help`` lists the targets, solvers and grids."""
    p = _parser()
    a = p.parse_args(argv)
    try:
        _check_target(a.target)
    except ValueError as e:
        p.error(str(e))
    solver_names = [s for s in a.solvers.split(",") if s]
    bad = [s for s in solver_names if s not in solvers.SOLVERS]
    if bad or not solver_names:
        p.error(f"--solvers: unknown {', '.join(map(repr, bad)) or 'empty list'}; choose from "
                f"{', '.join(solvers.SOLVERS)}")
    try:
        steps = [int(s) for s in a.steps.split(",") if s]
    except ValueError:
        steps = []
    if not steps or min(steps) < 1:
        p.error(f"--steps must be a comma-separated list of integers >= 1, got {a.steps!r}")
    for name, value, low in (("--num-samples", a.num_samples, 2), ("--reference-steps",
                             a.reference_steps, 1), ("--floor-draws", a.floor_draws, 2),
                             ("--dim", a.dim, 1)):
        if value < low:
            p.error(f"{name} must be >= {low}, got {value}")
    res = run_experiment(a.target, solver_names, steps, num_samples=a.num_samples,
                         reference_steps=a.reference_steps, dim=a.dim, seed=a.seed,
                         progress=not a.no_progress,
                         time_grid=None if a.grid == "default" else a.grid,
                         floor_draws=a.floor_draws)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({k: v for k, v in res.items() if not k.startswith("_")}, f, indent=2)
    _plots(res, a.out)
    for row in res["results"]:
        print(f"{row['solver']:18s} steps {row['num_steps']:4d} nfe {row['nfe']:4d} "
              f"paired {row['paired_rms']:.3e} sw {row['sw']:.3f}"
              + (f" w2 {row['w2']:.3e}" if "w2" in row else "")
              + f"  {row['seconds']:.3f} s"
              + (f" (+{row['compile_seconds']:.2f} s compile)" if "compile_seconds" in row else ""))
    print(f"sw noise floor {res['sw_noise_floor']:.3f} +- {res['sw_noise_floor_sd']:.3f} (sd): what "
          f"an exact sampler scores under the same estimator (n = {res['num_samples']}, the same "
          f"exact set and {NUM_PROJECTIONS} directions; mean and sd over "
          f"{res['sw_noise_floor_draws']} fresh exact samples);\n"
          f"  a run within about 2 sd of it cannot be told from exact sampling by sw. The reference solve "
          f"(rk4, {a.reference_steps} steps, same x_T) scores {res['sw_reference']:.3f}.")
    print(f"wrote {a.out}/results.json")
    return 0

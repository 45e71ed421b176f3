"""The diffusion sampling experiment runner (``samplers diffusion ...``).

For each solver and step count: draw samples from the same prior points x_T, measure their
distance to exact samples (sliced Wasserstein, MMD), the paired RMS error against a fine
reference solve from the same x_T (RK4, log-SNR grid; an upper bound on W2 between the two
laws with no sampling-noise floor), the exact W2 for Gaussian targets (the ODE
solvers are affine there, :mod:`diffusion.exact_law`), and the number of score evaluations (NFE).
Writes ``results.json``, ``convergence.png`` (error vs NFE, log-log, with fitted slopes) and,
for 2-d targets, ``samples.png``.

``--data digits`` or ``--data FILE.npz`` runs :func:`run_data_experiment` instead: real
images, a trained U-Net, and distances in a classifier's features (no exact samples there).

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

from samplers.validation import check_int

from . import nets, scores, solvers
from .exact_law import gaussian_sampling_w2
from .sde import VPSDE

__all__ = ["main", "run_experiment", "make_target", "TARGETS", "run_data_experiment",
           "load_images"]

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

        from . import training
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
    check_int("floor_draws", floor_draws, minimum=2)
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


# ------------------------------------------------------------------ the real-data experiment

DATA_SOLVERS = ("unipc_2", "dpm_solver_pp_2m", "ddim", "dpm_solver_2", "edm_heun")
DATA_NFE = (5, 10, 20, 50, 200)
REFERENCE = ("unipc_2", 200)  # the converged reference: the default solver at >= 200 NFE
TRAIN_FRACTION = 1500 / 1797  # the digits' split: 1500 to train on, 297 held out


def load_images(data: str):
    """``(images, labels)`` for ``--data``: "digits" (scikit-learn's 8x8 digits, pixels
    0..16 mapped to u / 8 - 1 in [-1, 1], labels 0..9) or a .npz file with ``images`` (n, H,
    W, C), taken as they are (scale them to [-1, 1]), and optionally integer ``labels`` (n,)
    in 0 .. K - 1 (None without them)."""
    if data == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.images[..., None] / 8.0 - 1.0).astype(np.float32), digits.target
    if not (isinstance(data, str) and data.endswith(".npz") and os.path.isfile(data)):
        raise ValueError(f"data must be 'digits' or an existing .npz file, got {data!r}")
    with np.load(data) as f:
        if "images" not in f:
            raise ValueError(f"data {data!r} has no array 'images' (n, H, W, C); it holds "
                             f"{', '.join(f.files) or 'nothing'}")
        images = np.asarray(f["images"], np.float32)
        labels = np.asarray(f["labels"]) if "labels" in f else None
    if images.ndim != 4 or images.shape[0] < 30:
        raise ValueError(f"data {data!r}: images must have shape (n, H, W, C) with n >= 30 "
                         f"(the held-out sixth needs > 3 for precision/recall), got shape "
                         f"{images.shape}")
    if labels is not None and (labels.shape != images.shape[:1] or not np.issubdtype(
            labels.dtype, np.integer) or labels.min() < 0):
        raise ValueError(f"data {data!r}: labels must be integers >= 0 of shape "
                         f"{images.shape[:1]}, got {labels.dtype} of shape {labels.shape}")
    return images, labels


def _data_plan(data, solver_names, nfe_targets, model_channels, train_steps, guidance_scale,
               num_samples, checkpoint):
    """Validate the real-data experiment's arguments (ValueError naming the bad one); return
    the images, labels and the steps {(solver, target NFE): num_steps}."""
    images, labels = load_images(data)
    if not solver_names:
        raise ValueError("solvers must name at least one solver")
    for s in solver_names:
        solvers._check_solver(s, solvers.ODE_SOLVERS)
    try:
        nets._check_image_shape(images.shape[1:], len(model_channels))
    except ValueError as e:
        raise ValueError(f"model_channels={tuple(model_channels)}: {e}") from None
    for name, value, low in (("train_steps", train_steps, 1), ("num_samples", num_samples, 10)):
        check_int(name, value, minimum=low)
    if not (isinstance(guidance_scale, (int, float)) and np.isfinite(guidance_scale)):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    if labels is None and guidance_scale != 1:
        raise ValueError(f"guidance_scale={guidance_scale!r} needs labels; data {data!r} has none")
    if checkpoint is not None and not os.path.isdir(os.path.dirname(os.path.abspath(checkpoint))):
        raise ValueError(f"checkpoint {checkpoint!r}: its folder does not exist")
    steps = {}
    for s in solver_names:
        for target in nfe_targets:
            fit = [k for k in range(1, target + 1) if solvers.nfe(s, k) <= target]
            if not fit:
                raise ValueError(f"nfe target {target} is below {s}'s smallest NFE "
                                 f"{solvers.nfe(s, 1)}")
            steps[(s, target)] = fit[-1]
    return images, labels, steps


def run_data_experiment(data: str = "digits", solver_names: Sequence[str] = DATA_SOLVERS,
                        nfe_targets: Sequence[int] = DATA_NFE, *,
                        model_channels: Sequence[int] = (8, 16), train_steps: int = 15000,
                        guidance_scale: float = 1.0, num_samples: int = 2000, seed: int = 0,
                        checkpoint: Optional[str] = None, progress: bool = True) -> dict:
    """Train (or load from ``checkpoint``) a U-Net noise predictor (:func:`diffusion.nets.unet`,
    class-conditional when the data have labels; batches of 32, Adam 2e-3, EMA 0.999,
    condition dropout 0.1) on a random ``TRAIN_FRACTION`` of the images of ``data``
    (:func:`load_images`), then draw ``num_samples`` images (labels cycling 0 .. K - 1) with
    each ODE solver at the largest step count whose NFE does not exceed each target, all from
    the same prior draws. Each run is scored against the held-out images in the features of
    a classifier trained on the training images (:func:`diffusion.metrics.digits_classifier`;
    the flattened pixels without labels): Frechet distance, KID and its standard error,
    precision and recall (k = 3). Samples are clipped to [-1, 1] for scoring and grids;
    ``out_of_range`` is the fraction of pixels that were outside. ``floor`` scores as many
    training images as samples (at most all) the same way: what a perfect sampler would get;
    ``reference`` is the run of ``REFERENCE`` (unipc_2 at max(200, the largest target) NFE).
    Returns a JSON-able dict, plus the clipped samples under "_samples"."""
    import optax

    from . import metrics, training
    from .networks import Network

    images, labels, steps = _data_plan(data, solver_names, nfe_targets, model_channels,
                                       train_steps, guidance_scale, num_samples, checkpoint)
    shape = images.shape[1:]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(images.shape[0])
    num_train = round(TRAIN_FRACTION * images.shape[0])
    train, held = perm[:num_train], perm[num_train:]
    num_classes = None if labels is None else int(labels.max()) + 1
    k_net, k_train, k_clf, k_sample = jax.random.split(jax.random.key(seed), 4)
    params, apply_fn = nets.unet(k_net, shape, tuple(model_channels), num_classes=num_classes)
    start = time.perf_counter()
    fit = training.train(k_train, images[train], VPSDE(), Network(apply_fn, prediction="eps"),
                         params, steps=train_steps, batch_size=32, optimizer=optax.adam(2e-3),
                         cond=None if labels is None else labels[train], null_cond=num_classes,
                         cond_drop=0.0 if labels is None else 0.1, checkpoint=checkpoint,
                         progress=progress)
    train_seconds = time.perf_counter() - start
    if labels is None:
        features, accuracy = (lambda x: np.asarray(x).reshape(len(x), -1)), None
    else:
        clf = metrics.digits_classifier(k_clf, images[train], labels[train],
                                        test_images=images[held], test_labels=labels[held])
        features, accuracy = clf.features, clf.test_accuracy
    real = features(images[held])

    def score(x):
        f = features(x)
        kid = metrics.kernel_distance(real, f)
        pr = metrics.precision_recall(real, f)
        return {"fd": metrics.frechet_distance(real, f), "kid": kid.value,
                "kid_stderr": kid.stderr, "precision": pr.precision, "recall": pr.recall}

    cond = None if labels is None else jnp.arange(num_samples) % num_classes
    network = Network(apply_fn, prediction="eps")
    samples, rows = {}, []

    def draw(s, k):
        start = time.perf_counter()
        x = np.asarray(solvers.sample(
            k_sample, VPSDE(), network, num_samples, shape=shape, params=fit.ema_params,
            cond=cond, null_cond=num_classes, solver=s, num_steps=k,
            guidance_scale=None if guidance_scale == 1 else guidance_scale))
        return np.clip(x, -1.0, 1.0), {"solver": s, "num_steps": k, "nfe": solvers.nfe(s, k),
                                       "seconds": time.perf_counter() - start,
                                       "out_of_range": float(np.mean(np.abs(x) > 1.0))}

    work = list(steps.items())
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(work), desc="sample", unit="run")
    for (s, target), k in work:
        x, row = draw(s, k)
        samples[(s, target)] = x
        rows.append({"nfe_target": target, **row, **score(x)})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    ref_solver, ref_nfe = REFERENCE[0], max(REFERENCE[1], *nfe_targets)
    ref = next((r for r in rows if (r["solver"], r["nfe_target"]) == (ref_solver, ref_nfe)), None)
    if ref is None:
        x, ref = draw(ref_solver, ref_nfe)
        ref.update(score(x))
    floor = score(images[train[:num_samples]])
    best = {t: min((r for r in rows if r["nfe_target"] == t), key=lambda r: r["fd"])["solver"]
            for t in nfe_targets}
    return {"data": data, "shape": list(shape), "num_train": int(num_train),
            "num_held_out": int(held.size), "num_classes": num_classes,
            "model_channels": list(model_channels), "train_steps": int(train_steps),
            "train_seconds": train_seconds, "final_loss": float(fit.losses[-100:].mean()),
            "guidance_scale": float(guidance_scale), "num_samples": int(num_samples),
            "seed": int(seed), "sde": "VPSDE(linear)",
            "features": "pixels" if labels is None else "digits_classifier",
            "classifier_test_accuracy": accuracy,
            "floor": {"num_real": int(min(num_samples, num_train)), **floor},
            "reference": ref, "results": rows, "best_solver_per_nfe": best,
            "_samples": samples}


def _data_plots(res, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("fd", "kid", "precision", "recall")
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for s in dict.fromkeys(r["solver"] for r in res["results"]):
        r = [row for row in res["results"] if row["solver"] == s]
        for ax, m in zip(axes, names):
            ax.plot([row["nfe"] for row in r], [row[m] for row in r], "o-", label=s)
    for ax, m in zip(axes, names):
        ax.axhline(res["floor"][m], color="k", ls=":", label="real vs real")
        ax.axhline(res["reference"][m], color="gray", ls="--",
                   label=f"{res['reference']['solver']}, {res['reference']['nfe']} NFE")
        ax.set_xscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(m)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{res['data']}: metrics vs NFE (guidance {res['guidance_scale']})")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "metrics.png"), dpi=120)
    plt.close(fig)
    os.makedirs(os.path.join(out, "grids"), exist_ok=True)
    for (s, target), x in res["_samples"].items():
        rows = min(10, len(x) // 10)  # labels cycle 0..9: with 10 columns, one class each
        h, w, c = x.shape[1:]
        tile = ((x[:rows * 10] + 1) / 2).reshape(rows, 10, h, w, c).transpose(0, 2, 1, 3, 4)
        tile = tile.reshape(rows * h, 10 * w, c).repeat(4, 0).repeat(4, 1)  # 4x4 per pixel
        plt.imsave(os.path.join(out, "grids", f"{s}_nfe{target}.png"),
                   tile[..., 0] if c == 1 else tile, cmap="gray", vmin=0.0, vmax=1.0)


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

real images (--data digits or --data FILE.npz with images (n, H, W, C) in [-1, 1] and
  optional integer labels (n,)): trains a U-Net (--model-channels, --train-steps; loaded from
  or resumed at --checkpoint), then samples --num-samples images (labels cycling 0..K-1,
  --guidance-scale) with each ODE solver at the most steps within each --nfe target, all from
  the same prior draws, and scores them against the held-out sixth of the images in a
  classifier's features (pixels without labels): Frechet distance "fd", KID +- its standard
  error, precision and recall. "floor": as many training images scored the same way (what a
  perfect sampler gets); "reference": unipc_2 at 200 (or the largest target) NFE.
  Output: results.json, metrics.png and grids/SOLVER_nfeN.png (one class per column).

example: samplers diffusion --target ring --solvers euler,heun,dpm_solver_2 --steps 5,10,20
         samplers diffusion --data digits --num-samples 1000 --out runs/digits
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samplers diffusion", description=_DESCRIPTION,
                                epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", metavar="TARGET",
                   help=f"one of {', '.join(TARGETS)} or file:PATH (default: ring)")
    p.add_argument("--data", metavar="DATA",
                   help="real images instead of a target: digits or FILE.npz (see below)")
    p.add_argument("--solvers", metavar="S1,S2,...",
                   help="comma-separated solver names, see below (default: euler,heun,"
                        f"dpm_solver_2; with --data: {','.join(DATA_SOLVERS)})")
    p.add_argument("--steps", default="5,10,20,50,100", metavar="K1,K2,...",
                   help="comma-separated step counts, each >= 1 (default: 5,10,20,50,100)")
    p.add_argument("--grid", default="default", choices=GRIDS,
                   help="time grid of the runs (default: each solver's own)")
    p.add_argument("--nfe", default=",".join(map(str, DATA_NFE)), metavar="N1,N2,...",
                   help="--data: target NFEs, each solver at the most steps within each "
                        f"(default: {','.join(map(str, DATA_NFE))})")
    p.add_argument("--num-samples", type=int, default=2000,
                   help="samples per run (>= 2; with --data >= 10)")
    p.add_argument("--model-channels", default="8,16", metavar="C1,C2,...",
                   help="--data: U-Net widths per resolution (default: 8,16)")
    p.add_argument("--train-steps", type=int, default=15000,
                   help="--data: training steps of 32 images (default: 15000, about 8 min on 2 "
                        "CPU cores; at 3000 the digits network is still far off)")
    p.add_argument("--guidance-scale", type=float, default=1.0,
                   help="--data: classifier-free guidance weight w (1: the conditional model)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="--data: training checkpoint, resumed or loaded when it exists")
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
    if a.data is not None:
        return _main_data(p, a)
    a.target = a.target or "ring"
    try:
        _check_target(a.target)
    except ValueError as e:
        p.error(str(e))
    solver_names = [s for s in (a.solvers or "euler,heun,dpm_solver_2").split(",") if s]
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


def _int_list(p, flag, text):
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        p.error(f"{flag} must be a comma-separated list of integers >= 1, got {text!r}")
    return values


def _main_data(p, a) -> int:
    """``samplers diffusion --data digits ...``: :func:`run_data_experiment`, then
    ``results.json``, ``metrics.png`` and ``grids/SOLVER_nfeN.png`` in ``--out``."""
    if a.target is not None:
        p.error(f"--target {a.target!r} and --data {a.data!r}: choose one")
    solver_names = [s for s in (a.solvers or ",".join(DATA_SOLVERS)).split(",") if s]
    kw = dict(model_channels=_int_list(p, "--model-channels", a.model_channels),
              train_steps=a.train_steps, guidance_scale=a.guidance_scale,
              num_samples=a.num_samples, checkpoint=a.checkpoint)
    nfe_targets = _int_list(p, "--nfe", a.nfe)
    try:
        _data_plan(a.data, solver_names, nfe_targets, **kw)
    except ValueError as e:
        p.error(str(e).replace("\n", " "))
    res = run_data_experiment(a.data, solver_names, nfe_targets, seed=a.seed,
                              progress=not a.no_progress, **kw)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({k: v for k, v in res.items() if not k.startswith("_")}, f, indent=2)
    _data_plots(res, a.out)
    for r in res["results"] + [dict(res["reference"], solver="reference " + res["reference"][
            "solver"]), dict(res["floor"], solver="real vs real", nfe=0)]:
        print(f"{r['solver']:24s} nfe {r['nfe']:4d} fd {r['fd']:8.3f} kid {r['kid']:7.3f} "
              f"+- {r['kid_stderr']:.3f} precision {r['precision']:.3f} recall {r['recall']:.3f}")
    print("best solver per NFE: " + ", ".join(f"{t}: {s}" for t, s in
                                               res["best_solver_per_nfe"].items()))
    print(f"wrote {a.out}/results.json, metrics.png and grids/")
    return 0

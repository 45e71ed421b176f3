"""The ``samplers`` command: ``samplers demo``, ``samplers verify``, ``samplers bench`` and the
subcommands other import packages add (``samplers diffusion``)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from importlib.metadata import entry_points
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import diagnostics, federated, langevin, targets
from .data import minibatches
from .run import run


class DemoCase(NamedTuple):
    """One row of the demo: a sampler on a target with a known answer."""

    method: str
    target: targets.Target
    algorithm: object
    num_steps: int
    num_warmup: int = 0
    batch_size: Optional[int] = None


def demo_cases(key, num_steps: int = 20_000) -> list[DemoCase]:
    """Each Langevin sampler on its default target (exact mean and covariance known)."""
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
    heterogeneity bias (Deng et al. 2021, Theorem 4.7)."""
    precisions = jnp.array([[[2.0, 0.5], [0.5, 1.0]], [[1.0, 0.0], [0.0, 3.0]],
                            [[1.5, -0.5], [-0.5, 1.0]], [[0.5, 0.0], [0.0, 0.5]]])
    means = jnp.array([[1.0, 0.0], [-1.0, 1.0], [0.5, -1.0], [0.0, 2.0]])
    cov = jnp.linalg.inv(precisions.sum(0))
    mean = cov @ jnp.einsum("cij,cj->i", precisions, means)
    clients = [lambda x, a=a, m=m: -0.5 * (x - m) @ a @ (x - m) for a, m in zip(precisions, means)]
    return targets.gaussian(mean, cov)._replace(name="gaussian (4 clients)"), clients


def _plot(path, case: DemoCase, draws: np.ndarray, key) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exact = np.asarray(case.target.sample(key, draws.shape[0]))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(exact[:, 0], exact[:, 1], s=2, alpha=0.3, label="exact draws")
    ax.scatter(draws[:, 0], draws[:, 1], s=2, alpha=0.3, label=case.method)
    ax.set_title(f"{case.method} on {case.target.name}")
    ax.legend(markerscale=5, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def demo(out: str = "samplers-demo", num_chains: int = 4, seed: int = 0,
         num_steps: int = 20_000, only: Optional[Sequence[str]] = None) -> list[dict]:
    """Run every sampler on its default target; print a table; write one plot per method.

    ``only``: run just the rows whose method name starts with one of these (e.g. "mala").
    The error is the Wasserstein-2 distance between the Gaussian fitted to the draws (their
    mean and covariance) and the target's exact mean and covariance: it measures the
    sampler's bias (ULA, SGLD) plus Monte Carlo error.
    """
    os.makedirs(out, exist_ok=True)
    key = jax.random.key(seed)
    rows = []
    print(f"{'method':<42} {'target':<40}{'W2 error':>10}{'min ESS':>10}{'time (s)':>10}")

    def show(row):
        ess = f"{row['min_ess']:>10.0f}" if row.get("min_ess") is not None else f"{'-':>10}"
        print(f"{row['method']:<42} {row['target']:<40}{row['w2_error']:>10.4f}{ess}{row['seconds']:>10.2f}")
        rows.append(row)

    def wanted(method):
        return only is None or any(method.startswith(name) for name in only)

    for i, case in enumerate(demo_cases(key, num_steps)):
        if not wanted(case.method):
            continue
        k_run, k_plot = jax.random.split(jax.random.fold_in(key, i))
        batches = (None if case.batch_size is None
                   else minibatches(case.target.data, case.batch_size))
        start = time.perf_counter()
        trace = run(case.algorithm, k_run, jnp.zeros(case.target.dim), case.num_steps,
                    num_chains=num_chains, num_warmup=case.num_warmup, thin=10,
                    batches=batches, progress=False)
        x = np.asarray(trace.positions)
        seconds = time.perf_counter() - start
        flat = x.reshape(-1, x.shape[-1])
        error = float(diagnostics.gaussian_w2(flat.mean(0), np.cov(flat.T), case.target.mean,
                                              case.target.cov))
        min_ess = float(np.min(diagnostics.ess(x)))
        plot = os.path.join(out, case.method.split()[0] + ".png")
        _plot(plot, case, flat, k_plot)
        show({"method": case.method, "target": case.target.name, "w2_error": error,
              "min_ess": min_ess, "seconds": seconds, "plot": plot})
    for entry in entry_points(group="samplers.demos"):  # rows from vi, diffusion, ...
        if wanted(entry.name):
            show(entry.load()(seed=seed))
    print(f"plots written to {os.path.abspath(out)}/")
    return rows


def verify_main(argv: Sequence[str]) -> int:
    """``samplers verify ...``: see :func:`samplers.verify.main`."""
    from . import verify

    return verify.main(argv)


def bench_main(argv: Sequence[str]) -> int:
    """``samplers bench [NAME ...] [--quick] [--out DIR]``: the benchmarks of ``benchmarks/``
    (a source checkout: they need the peers, ``pip install ".[bench]"``, and are not part of
    the installed package), then one report, ``DIR/report.md``."""
    root = os.getcwd()
    if not os.path.isfile(os.path.join(root, "benchmarks", "harness.py")):
        if {"-h", "--help"} & set(argv):
            print("usage: samplers bench [NAME ...] [--quick] [--out DIR] [--repeats N]\n\n"
                  + (bench_main.__doc__ or ""))
            return 0
        print("samplers bench runs the benchmarks of a source checkout: run it from the "
              "repository root (where benchmarks/ is) after pip install \".[bench]\"; "
              f"no benchmarks/harness.py under {root}", file=sys.stderr)
        return 2
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import BENCHMARKS
    from benchmarks.harness import main as harness_main

    return int(harness_main(BENCHMARKS, list(argv), prog="samplers bench") or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="samplers", description="JAX samplers checked against their convergence guarantees.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_demo = sub.add_parser("demo", help="run each sampler on a target with a known answer",
                            description=demo.__doc__)
    p_demo.add_argument("--out", default="samplers-demo", help="folder for the plots")
    p_demo.add_argument("--chains", type=int, default=4, help="chains per sampler")
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--steps", type=int, default=20_000,
                        help="steps per chain (a multiple of 10)")
    p_demo.add_argument("--only", nargs="+", metavar="METHOD",
                        help="run only these rows (method names or their prefixes)")
    own = {"verify": (verify_main, "check each method against its paper's guarantee; a table"),
           "bench": (bench_main, "run the peer benchmarks; one markdown report (source checkout)")}
    plugins = {entry.name: entry for entry in entry_points(group="samplers.commands")}
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in own:  # these parse their own options
        return int(own[argv[0]][0](argv[1:]) or 0)
    if argv and argv[0] in plugins:  # e.g. `samplers diffusion ...`, from the diffusion package
        return int(plugins[argv[0]].load()(argv[1:]) or 0)
    for name, (_, text) in own.items():
        sub.add_parser(name, help=text, add_help=False)
    for name in plugins:
        sub.add_parser(name, help=f"{name} experiments (see `samplers {name} --help`)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        if args.chains < 1:
            parser.error(f"--chains must be >= 1, got {args.chains}")
        if args.steps < 10 or args.steps % 10:
            parser.error(f"--steps must be a positive multiple of 10, got {args.steps}")
        demo(args.out, args.chains, args.seed, args.steps, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``samplers`` command: ``samplers demo``, ``samplers verify``, ``samplers bench`` and the
subcommands other import packages add (``samplers diffusion``)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from importlib.metadata import entry_points
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import diagnostics
from ._xla import configure_xla
from .data import minibatches
from .demos import demo_cases
from .run import run

# names of the Langevin and FA-LD rows (samplers.demos.demo_cases), in order
_OWN_ROWS = ("ula", "mala", "underdamped", "sgld", "fald")


def _row_name(method: str) -> str:
    return method.split()[0]


def _demo_entries() -> list:
    """The ``samplers.demos`` entry points, in name order."""
    return sorted(entry_points(group="samplers.demos"), key=lambda entry: entry.name)


def demo_rows() -> list[str]:
    """Names of the rows of ``samplers demo``, in order: the Langevin and FA-LD rows of
    :func:`samplers.demos.demo_cases`, then those of the ``samplers.demos`` entry points
    (diffusion, fbgvi, smc, stein, sw_flow: functions of ``samplers.demos``, ``vi.demos`` and
    ``diffusion.demos``). ``--only`` selects rows by these names or their prefixes; each row's
    plot is ``NAME.png``."""
    return list(_OWN_ROWS) + [entry.name for entry in _demo_entries()]


def _check_only(only: Optional[Sequence[str]]) -> None:
    if only is None:
        return
    names = demo_rows()
    unknown = [o for o in only if not any(n.startswith(o) for n in names)]
    if unknown or not only:
        raise ValueError(f"no demo row named {', '.join(map(repr, unknown)) or '(nothing)'}; "
                         f"the rows are {', '.join(names)} (names or their prefixes)")


def _thin(points, max_points: int = 2000) -> np.ndarray:
    points = np.asarray(points)
    step = max(1, -(-points.shape[0] // max_points))
    return points[::step]


def _figure(row: dict):
    """A matplotlib figure for one demo row, or None when the row brings nothing to draw.

    A row draws either a cloud, ``row["draws"]`` (n, d) against ``row["exact_draws"]``
    (m, d) (first two coordinates, ``row["axis_labels"]`` naming them), or smoothing
    marginals, ``row["marginals"]`` = {"t", "mean", "sd", "exact_mean", "exact_sd"} and
    optionally "observations" (each an array over t)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = f"{row['method']}\non {row['target']}"
    if row.get("draws") is not None and row.get("exact_draws") is not None:
        draws, exact = _thin(row["draws"]), _thin(row["exact_draws"])
        xlabel, ylabel = row.get("axis_labels") or ("$x_1$", "$x_2$")
        fig, ax = plt.subplots(figsize=(5, 5.4))

        def size(n):  # larger markers for fewer points
            return float(np.clip(12_000 / n, 6.0, 30.0))

        # the sampler's draws filled underneath; the exact draws on top as hollow circles, so
        # each cloud shows through the other
        ax.scatter(draws[:, 0], draws[:, 1], s=size(len(draws)),
                   alpha=0.45 if len(draws) > 1000 else 0.8, color="C0", linewidths=0,
                   zorder=2, label=row.get("draws_label", row["method"]))
        ax.scatter(exact[:, 0], exact[:, 1], s=1.5 * size(len(exact)), facecolors="none",
                   edgecolors="C1", linewidths=0.6, alpha=0.6, zorder=3,
                   label=row.get("exact_label", "exact draws"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2,
                           frameon=False, fontsize="small")
        for handle in legend.legend_handles:
            handle.set_sizes([40.0])
    elif row.get("marginals") is not None:
        m = {k: np.asarray(v, np.float64) for k, v in row["marginals"].items()}
        t = m["t"]
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        ax.fill_between(t, m["exact_mean"] - 2 * m["exact_sd"], m["exact_mean"] + 2 * m["exact_sd"],
                        color="C1", alpha=0.25, linewidth=0, zorder=1,
                        label="exact: mean +- 2 sd (RTS smoother)")
        ax.plot(t, m["exact_mean"], color="C1", linewidth=1.5, zorder=3)
        ax.errorbar(t, m["mean"], yerr=2 * m["sd"], fmt="o", markersize=3, color="C0",
                    elinewidth=0.8, alpha=0.8, zorder=2, label=f"{row['method']}: mean +- 2 sd")
        if "observations" in m:
            ax.scatter(t, m["observations"], s=8, marker="x", color="0.5", zorder=0,
                       label="observations $y_t$")
        ax.set_xlabel(row.get("axis_labels", ("time $t$", "$x_t$"))[0])
        ax.set_ylabel(row.get("axis_labels", ("time $t$", "$x_t$"))[1])
        legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
                           frameon=False, fontsize="small")
    else:
        return None
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    return fig


def _plot(path: str, row: dict) -> Optional[str]:
    """Write the row's figure to ``path``; return ``path``, or None if there is nothing to
    draw."""
    fig = _figure(row)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


_PICTURE_KEYS = ("draws", "exact_draws", "marginals", "axis_labels", "draws_label", "exact_label")


def demo(out: str = "samplers-demo", num_chains: int = 4, seed: int = 0,
         num_steps: int = 20_000, only: Optional[Sequence[str]] = None) -> list[dict]:
    """Run every sampler on its target with a known answer; print a table; write one plot
    per row, ``out/NAME.png`` (the rows, :func:`demo_rows`: ula, mala, underdamped, sgld,
    fald, then those the other packages add: diffusion, fbgvi, smc, stein, sw_flow): the
    sampler's draws, particles or samples with exact draws of the target on top, or, for
    smc, the estimated smoothing marginals against the exact ones.

    ``only``: run just the rows whose name starts with one of these (e.g. "mala", "sw");
    a name that matches no row is a ValueError, raised before anything is run or written.
    The error is the Wasserstein-2 distance between the Gaussian fitted to the draws (their
    mean and covariance) and the target's exact mean and covariance: it measures the
    sampler's bias (ULA, SGLD) plus Monte Carlo error (rows from other packages say what
    theirs is).
    """
    only = [only] if isinstance(only, str) else only
    _check_only(only)
    os.makedirs(out, exist_ok=True)
    key = jax.random.key(seed)
    rows = []
    print(f"{'method':<42} {'target':<40}{'W2 error':>10}{'min ESS':>10}{'time (s)':>10}")

    def show(name, row):
        row = dict(row)
        row["plot"] = _plot(os.path.join(out, name + ".png"), row)
        for k in _PICTURE_KEYS:
            row.pop(k, None)
        ess = f"{row['min_ess']:>10.0f}" if row.get("min_ess") is not None else f"{'-':>10}"
        print(f"{row['method']:<42} {row['target']:<40}{row['w2_error']:>10.4f}{ess}{row['seconds']:>10.2f}")
        rows.append(row)

    def wanted(name):
        return only is None or any(name.startswith(o) for o in only)

    for i, case in enumerate(demo_cases(key, num_steps)):
        if not wanted(_row_name(case.method)):
            continue
        k_run, k_plot = jax.random.split(jax.random.fold_in(key, i))
        batches = (None if case.batch_size is None
                   else minibatches(case.target.data, case.batch_size))
        start = time.perf_counter()
        trace = run(k_run, case.algorithm, jnp.zeros(case.target.dim), case.num_steps,
                    num_chains=num_chains, num_warmup=case.num_warmup, thin=10,
                    batches=batches, progress=False)
        x = np.asarray(trace.positions)
        seconds = time.perf_counter() - start
        flat = x.reshape(-1, x.shape[-1])
        error = float(diagnostics.gaussian_w2(flat.mean(0), np.cov(flat.T), case.target.mean,
                                              case.target.cov))
        min_ess = float(np.min(diagnostics.ess(x)))
        exact = np.asarray(case.target.sample(k_plot, min(flat.shape[0], 2000)))
        labels = (("weight $w_1$", "weight $w_2$") if case.target.data is not None
                  else ("$x_1$", "$x_2$"))
        show(_row_name(case.method),
             {"method": case.method, "target": case.target.name, "w2_error": error,
              "min_ess": min_ess, "seconds": seconds, "draws": flat, "exact_draws": exact,
              "axis_labels": labels})
    for entry in _demo_entries():  # rows from samplers.demos, vi.demos, diffusion.demos
        if wanted(entry.name):
            show(entry.name, entry.load()(seed=seed))
    print(f"plots written to {os.path.abspath(out)}/")
    return rows


_DEMO_HELP = """Run each sampler on a target with a known answer, print a table (W2 error,
minimum ESS, seconds) and write one plot per row, ROW.png in --out: the sampler's draws
(particles, samples) with exact draws of the target drawn on top as hollow circles, or, for
the smc row, the estimated smoothing marginals against the exact ones.

The W2 error is the Wasserstein-2 distance between the Gaussian fitted to the draws (their
mean and covariance) and the target's exact mean and covariance: the sampler's bias (ULA,
SGLD) plus Monte Carlo error. Rows from the other packages use their own exact measure
(FB-GVI and diffusion: the exact W2 of their Gaussian output law; sw_flow: the optimal
assignment W2 to the target cloud; stein: the Gaussian-fitted W2 above; smc: RMS over t
of the marginals' exact W2)."""


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
    """The ``samplers`` command. Turns XLA's CPU YNN fusions off first
    (:func:`samplers.configure_xla`; ``SAMPLERS_KEEP_XLA_FLAGS=1`` keeps XLA's defaults)."""
    configure_xla()
    parser = argparse.ArgumentParser(
        prog="samplers", description="JAX samplers checked against their convergence guarantees.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_demo = sub.add_parser("demo", help="run each sampler on a target with a known answer",
                            description=_DEMO_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p_demo.add_argument("--out", default="samplers-demo", help="folder for the plots")
    p_demo.add_argument("--chains", type=int, default=4, help="chains per sampler")
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--steps", type=int, default=20_000,
                        help="steps per chain (a multiple of 10)")
    p_demo.add_argument("--only", nargs="+", metavar="ROW",
                        help="run only these rows (names or their prefixes): "
                             + ", ".join(demo_rows()))
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
        try:
            _check_only(args.only)
        except ValueError as e:
            parser.error(f"--only: {e}")
        demo(args.out, args.chains, args.seed, args.steps, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())

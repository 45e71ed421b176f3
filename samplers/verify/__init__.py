"""``samplers verify``: one check per method of the guarantee its paper proves.

A :class:`Check` names a method, its paper and the guarantee, and holds a function
``run(key, full) -> Outcome`` that measures the guarantee as the suite's tests do (a rate, a
bias, a fixed point) and compares it with theory's value under a tolerance computed from
Monte Carlo standard errors in the check itself. ``full=False`` is the quick size (a few
seconds after compilation); ``full=True`` is the size of the ``slow`` studies.

The checks of every import package are found through the ``samplers.checks`` entry-point
group (``samplers`` never imports ``vi`` or ``diffusion``); each entry point is a function
returning a list of :class:`Check`. :func:`main` is the command line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
import zlib
from importlib.metadata import entry_points
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import numpy as np

from .. import diagnostics

__all__ = ["Check", "Outcome", "Result", "mc_mean", "within", "near", "at_most", "all_checks", "run_checks",
           "markdown_table", "markdown_report", "main"]


class Outcome(NamedTuple):
    """What a check measured.

    Attributes:
      measured: the measured value (a rate, a bias, a distance, ...).
      theory: theory's value for it (or the bound it must not exceed).
      criterion: the pass rule with its numbers, e.g. "|measured - theory| <= 5 SE = 0.021".
      passed: whether the rule holds.
      what: what was measured, in words, with the sizes ("stationary variance, 4 x 20,000 steps").
    """

    measured: float
    theory: float
    criterion: str
    passed: bool
    what: str


class Check(NamedTuple):
    """One guarantee check: ``run(key, full) -> Outcome``."""

    method: str
    paper: str
    guarantee: str
    run: Callable[[jax.Array, bool], Outcome]
    group: str = ""


class Result(NamedTuple):
    """A check's row in the table: the check's names, its outcome, the time it took.
    ``error`` holds the exception's text when the check raised (a failure)."""

    method: str
    group: str
    paper: str
    guarantee: str
    what: str
    measured: float
    theory: float
    criterion: str
    passed: bool
    seconds: float
    error: Optional[str] = None


def mc_mean(x) -> tuple[float, float]:
    """Mean of a (chain, draw) series and its Monte Carlo standard error from the bulk ESS."""
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std() / np.sqrt(float(diagnostics.ess(x))))


def within(measured, theory, se, what: str, z: float = 5.0) -> Outcome:
    """Outcome of a two-sided test: |measured - theory| <= z * se (se computed by the check)."""
    measured, theory, se = float(measured), float(theory), float(se)
    bound = z * se
    passed = math.isfinite(measured) and abs(measured - theory) <= bound
    return Outcome(measured, theory, f"|measured - theory| <= {z:g} SE = {bound:.3g}", passed, what)


def near(measured, theory, tolerance, what: str, note: str) -> Outcome:
    """Outcome of |measured - theory| <= tolerance for a tolerance that is not a standard
    error (e.g. a fitted order must round to the theorem's); ``note`` says why."""
    measured, theory, tolerance = float(measured), float(theory), float(tolerance)
    passed = math.isfinite(measured) and abs(measured - theory) <= tolerance
    return Outcome(measured, theory, f"|measured - theory| <= {tolerance:g} ({note})", passed,
                   what)


def at_most(measured, bound, what: str, note: str = "") -> Outcome:
    """Outcome of a one-sided test: measured <= bound (e.g. an error below a theorem's bound)."""
    measured, bound = float(measured), float(bound)
    passed = math.isfinite(measured) and measured <= bound
    return Outcome(measured, bound, f"measured <= {bound:.3g}" + (f" ({note})" if note else ""),
                   passed, what)


# the table's order of the groups (the mission's order); other groups follow, by name
GROUP_ORDER = ("langevin", "federated", "stein", "vi", "smc", "sliced", "diffusion")


def all_checks() -> list[Check]:
    """Every registered check (the ``samplers.checks`` entry points), grouped in
    :data:`GROUP_ORDER`."""
    rank = {name: i for i, name in enumerate(GROUP_ORDER)}
    entries = sorted(entry_points(group="samplers.checks"),
                     key=lambda e: (rank.get(e.name, len(rank)), e.name))
    checks = []
    for entry in entries:
        try:
            found = entry.load()()
        except Exception as exc:  # a group that cannot load is one failed row, not a crash
            found = [_unloadable(entry.name, entry.value, exc)]
        checks.extend(c if c.group else c._replace(group=entry.name) for c in found)
    return checks


def _unloadable(group: str, target: str, exc: Exception) -> Check:
    def fail(key, full):
        raise RuntimeError(f"the checks of {group!r} ({target}) did not load: "
                           f"{type(exc).__name__}: {exc}")

    return Check(group, "-", "its checks load", fail, group)


def select(checks: Sequence[Check], names: Optional[Sequence[str]]) -> list[Check]:
    """The checks whose method or group is one of ``names`` (case-insensitive; all if None)."""
    if not names:
        return list(checks)
    wanted = {n.lower() for n in names}
    chosen = [c for c in checks if c.method.lower() in wanted or c.group.lower() in wanted]
    known = {c.method.lower() for c in checks} | {c.group.lower() for c in checks}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"--method: no check named {', '.join(unknown)}; known methods: "
                         f"{', '.join(sorted({c.method for c in checks}))}; groups: "
                         f"{', '.join(sorted({c.group for c in checks}))}")
    return chosen


def run_check(check: Check, key, full: bool) -> Result:
    """Run one check; an exception is a failed row carrying the error, never a crash."""
    start = time.perf_counter()
    try:
        out = check.run(key, full)
        error = None
    except Exception as exc:  # a check that cannot run has failed
        out = Outcome(math.nan, math.nan, "raised", False, "")
        error = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, for the table
        traceback.print_exc()
    return Result(check.method, check.group, check.paper, check.guarantee, out.what,
                  float(out.measured), float(out.theory), out.criterion, bool(out.passed),
                  time.perf_counter() - start, error)


def run_checks(checks: Sequence[Check], seed: int = 0, full: bool = False,
               echo: Optional[Callable[[Result], None]] = None) -> list[Result]:
    """Run ``checks`` in order, each with its own key ``fold_in(key(seed), crc32(method))``:
    a check gives the same numbers alone (``--method``) as in the whole table."""
    key = jax.random.key(seed)
    results = []
    for check in checks:
        method_key = jax.random.fold_in(key, zlib.crc32(check.method.encode()) & 0x7FFFFFFF)
        result = run_check(check, method_key, full)
        results.append(result)
        if echo is not None:
            echo(result)
    return results


def _num(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.4g}"


def _line(r: Result) -> str:
    status = "pass" if r.passed else "FAIL"
    return (f"{r.method:<22} {status:<5} measured {_num(r.measured):>10}  theory "
            f"{_num(r.theory):>10}  {r.criterion}  [{r.seconds:.1f} s]"
            + (f"\n{'':<28}{r.error}" if r.error else ""))


def markdown_table(results: Sequence[Result]) -> str:
    """The guarantee table in markdown: method, paper, guarantee, measured, theory, result."""
    head = ("| method | paper | guarantee | what was measured | measured | theory | rule | result |\n"
            "|---|---|---|---|---:|---:|---|---|\n")
    rows = []
    for r in results:
        status = "pass" if r.passed else ("**fail**" + (f": {r.error}" if r.error else ""))
        cells = [r.method, r.paper, r.guarantee, r.what, _num(r.measured), _num(r.theory),
                 r.criterion, status]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return head + "\n".join(rows) + "\n"


def markdown_report(results: Sequence[Result], meta: dict) -> str:
    """The count of passed checks, the run's sizes, seed and machine, then the table."""
    passed = sum(r.passed for r in results)
    return (f"{passed} of {len(results)} checks passed ({'full' if meta['full'] else 'quick'} "
            f"sizes, seed {meta['seed']}, jax {meta['jax']} on {meta['backend']}, "
            f"{meta['machine']}).\n\n" + markdown_table(results))


def _json_row(r: Result) -> dict:
    """A result as JSON (a NaN, from a check that raised, becomes null)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in r._asdict().items()}


def main(argv: Optional[Sequence[str]] = None, checks: Optional[Sequence[Check]] = None) -> int:
    """``samplers verify [--full] [--json FILE] [--markdown FILE] [--method NAME ...]``.

    Returns 0 when every check passed, 1 otherwise (the shell's exit status).
    """
    parser = argparse.ArgumentParser(
        prog="samplers verify",
        description="Check each method against the convergence guarantee its paper proves.")
    parser.add_argument("--full", action="store_true",
                        help="larger sizes (minutes; tighter standard errors)")
    parser.add_argument("--json", metavar="FILE", help="write the table as JSON to FILE")
    parser.add_argument("--markdown", metavar="FILE", help="write the table as markdown to FILE")
    parser.add_argument("--method", nargs="+", action="extend", metavar="NAME",
                        help="run only these methods (or groups: langevin, stein, smc, ...)")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    checks = all_checks() if checks is None else list(checks)
    try:
        chosen = select(checks, args.method)
    except ValueError as exc:
        parser.error(str(exc))
    if not chosen:
        print("no guarantee checks are registered: install the package (pip install .) so "
              "that its samplers.checks entry points exist", file=sys.stderr)
        return 1
    if args.list:
        for c in chosen:
            print(f"{c.method:<22} {c.group:<10} {c.paper}: {c.guarantee}")
        return 0
    for path in (args.json, args.markdown):  # a bad path fails now, not after the checks
        if path:
            open(path, "a").close()
    print(f"{len(chosen)} checks ({'full' if args.full else 'quick'} sizes), "
          f"jax {jax.__version__} on {jax.default_backend()}")
    results = run_checks(chosen, args.seed, args.full, echo=lambda r: print(_line(r), flush=True))
    failed = [r.method for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    meta = {"full": args.full, "seed": args.seed, "jax": jax.__version__,
            "backend": jax.default_backend(),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs"}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**meta, "results": [_json_row(r) for r in results]}, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# Guarantee table\n\n" + markdown_report(results, meta))
    return 1 if failed else 0

"""Timing harness: ours against a peer, side by side, in one process.

A :class:`Case` is two zero-argument callables that do the same work (same target, same
sizes, same number of steps), one built on ``samplers`` and one on a peer library.
:func:`compare` calls each once to compile (the first-call time is kept but never enters a
ratio), then times them alternately, ``repeats`` times each, so that a change in machine
load hits both; every timing waits for the result with ``jax.block_until_ready``.
The reported ratio is median(peer time) / median(our time): above 1 we are faster.

:func:`write_report` writes ``<name>.json`` (all timings and the machine) and ``<name>.md``
(a table of ratios); :func:`main` is the command line shared by every benchmark module.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import jax

from samplers import configure_xla

# before any benchmark computes: jaxlib 0.10's CPU YNN fusions slow PaRIS 7-15x (samplers/_xla.py);
# ours and the peers run under the same flags
configure_xla()

__all__ = ["Case", "compare", "machine_info", "markdown_report", "write_report", "main"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
PACKAGES = ("jax", "jaxlib", "numpy", "blackjax", "numpyro")


@dataclasses.dataclass(frozen=True)
class Case:
    """One comparison.

    Attributes:
      method: what is compared ("mala", ...).
      params: the sizes, shown as table columns ({"d": 100, "chains": 16, ...}).
      ours, peer: zero-argument callables doing the same work; each returns JAX arrays.
      peer_name: who the peer is ("blackjax", "bare lax.scan", ...).
      check: optional ``(our_output, peer_output) -> {name: (ours, peer)}`` computed once
        from the warm-up outputs: a statistic both should agree on (acceptance rate, ...)
        that shows the two sides did the same work.
    """

    method: str
    params: dict
    ours: Callable[[], Any]
    peer: Callable[[], Any]
    peer_name: str
    check: Optional[Callable[[Any, Any], dict]] = None


# ------------------------------------------------------------------------------ timing

def _timed(fn: Callable[[], Any], number: int = 1) -> tuple[float, Any]:
    """Seconds per call of ``fn`` over ``number`` calls, waiting for the results."""
    start = time.perf_counter()
    for _ in range(number):
        out = jax.block_until_ready(fn())
    return (time.perf_counter() - start) / number, out


def _calls_per_timing(seconds_per_call: float, min_time: float) -> int:
    """How many back-to-back calls make one timing last at least ``min_time`` seconds."""
    return max(1, math.ceil(min_time / max(seconds_per_call, 1e-9)))


def compare(case: Case, repeats: int = 5, min_time: float = 0.05) -> dict:
    """Time ``case.ours`` and ``case.peer`` alternately; return a JSON-ready result row.

    Each side is called once first (compilation; reported as ``*_first_s``), then once more
    to calibrate how many calls one timing needs to last ``min_time`` seconds, so that
    timer resolution and dispatch jitter do not dominate a short call.
    """
    ours_first, ours_out = _timed(case.ours)
    peer_first, peer_out = _timed(case.peer)
    number = {side: _calls_per_timing(_timed(fn)[0], min_time)
              for side, fn in (("ours", case.ours), ("peer", case.peer))}
    ours_times, peer_times = [], []
    for _ in range(repeats):
        ours_times.append(_timed(case.ours, number["ours"])[0])
        peer_times.append(_timed(case.peer, number["peer"])[0])
    ours_s, peer_s = statistics.median(ours_times), statistics.median(peer_times)
    paired = [p / o for p, o in zip(peer_times, ours_times)]
    row = {
        "method": case.method, "peer": case.peer_name, **case.params,
        "ours_s": ours_s, "peer_s": peer_s, "ratio": peer_s / ours_s,
        "ratio_min": min(paired), "ratio_max": max(paired),
        "ours_first_s": ours_first, "peer_first_s": peer_first,
        "ours_times": ours_times, "peer_times": peer_times, "calls_per_timing": number,
    }
    if case.check is not None:
        check = case.check(ours_out, peer_out)
        row["check"] = {k: [float(a), float(b)] for k, (a, b) in check.items()}
    return row


def run_cases(cases: Iterable[Case], repeats: int, min_time: float,
              log: Callable[[str], None] = print) -> list[dict]:
    """:func:`compare` each case in turn, logging one line per case."""
    rows = []
    for case in cases:
        row = compare(case, repeats, min_time)
        sizes = " ".join(f"{k}={v}" for k, v in case.params.items())
        log(f"  {case.method:<12} vs {case.peer_name:<14} {sizes:<40} "
            f"peer/ours {row['ratio']:.2f} [{row['ratio_min']:.2f}, {row['ratio_max']:.2f}]")
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _loadavg() -> Optional[list[float]]:
    """1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info(packages: Iterable[str] = PACKAGES) -> dict:
    """Where the numbers come from: OS, CPU, usable cores, JAX backend and device, versions."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = jax.devices()[0]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "loadavg": _loadavg(),
        "versions": {p: _version(p) for p in packages},
    }


# ----------------------------------------------------------------------------- reports

def _format_check(check: Optional[dict]) -> str:
    if not check:
        return ""
    text = "; ".join(f"{name} {a:.3g} vs {b:.3g}" for name, (a, b) in check.items())
    return text.replace("|", "\\|")  # a bare | would end the table cell


def _param_columns(rows: list[dict]) -> list[str]:
    """The size columns, in order of first appearance, from every row's params."""
    fixed = {"method", "peer", "check"}
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key in fixed or key.startswith(("ours_", "peer_", "ratio", "calls_")):
                continue
            if key not in columns:
                columns.append(key)
    return columns


def markdown_table(rows: list[dict]) -> str:
    """A markdown table: method, peer, sizes, peer/ours (median), its range over repeats,
    our first-call (compile) time, and the agreement check."""
    params = _param_columns(rows)
    header = ["method", "peer", *params, "peer/ours", "range", "check (ours vs peer)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["method"], row["peer"], *(str(row.get(k, "")) for k in params),
                 f"**{row['ratio']:.2f}**", f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f}",
                 _format_check(row.get("check"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_markdown(machine: dict) -> str:
    """One line describing the machine and the library versions."""
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    return (f"{machine['cpu']} ({machine['cpus_usable']} usable of {machine['cpu_count']} CPUs), "
            f"{machine['platform']}, Python {machine['python']}; JAX backend "
            f"{machine['backend']} ({machine['device_kind']}, x64={machine['x64']}); {versions}; "
            f"load average at start {machine['loadavg']}; {machine['date']}")


def markdown_report(title: str, rows: list[dict], machine: dict, notes: str = "") -> str:
    """The markdown page of one benchmark: title, machine, notes, table."""
    parts = [f"## {title}", "", f"Machine: {machine_markdown(machine)}", ""]
    if notes:
        parts += [notes.strip(), ""]
    legend = ("peer/ours = median peer time / median our time (> 1: samplers is faster); "
              "range = min–max of the per-repeat ratios.")
    parts += [legend, "", markdown_table(rows), ""]
    return "\n".join(parts)


def write_report(name: str, title: str, rows: list[dict], machine: dict, out_dir,
                 notes: str = "", config: Optional[dict] = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    payload = {"benchmark": name, "title": title, "machine": machine, "config": config or {},
               "results": rows}
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown_report(title, rows, machine, notes))
    return json_path, md_path


# ------------------------------------------------------------------------ command line

def run_benchmark(module, quick: bool, out_dir, repeats: Optional[int] = None) -> Path:
    """Run one benchmark module and write its report.

    A benchmark module defines ``NAME``, ``TITLE``, ``NOTES``, ``PEERS`` (package names),
    ``config(quick) -> dict`` (with ``repeats`` and ``min_time``) and
    ``cases(config) -> iterable of Case``.
    """
    config = module.config(quick)
    if repeats is not None:
        config["repeats"] = repeats
    machine = machine_info(PACKAGES + tuple(p for p in module.PEERS if p not in PACKAGES))
    print(f"{module.NAME}: {module.TITLE} ({'quick' if quick else 'full'})", flush=True)
    start = time.perf_counter()
    rows = run_cases(module.cases(config), config["repeats"], config["min_time"],
                     log=lambda line: print(line, flush=True))
    config["wall_s"] = round(time.perf_counter() - start, 1)
    config["loadavg_end"] = _loadavg()
    _, md_path = write_report(module.NAME, module.TITLE, rows, machine, out_dir,
                              module.NOTES, config)
    print(f"{module.NAME}: {config['wall_s']} s; wrote {md_path} and .json", flush=True)
    return md_path


def combined_report(md_paths: Iterable[Path], machine: dict, quick: bool, command: str) -> str:
    """One markdown report: the command, the machine and versions, then each benchmark's page."""
    parts = ["# samplers against its peers", "",
             f"{'Quick' if quick else 'Full'} run (`{command}`). Machine: "
             f"{machine_markdown(machine)}", "",
             "Every ratio is peer time / our time, measured side by side in one process "
             "(> 1: samplers is faster); each section below names its peer, sizes and "
             "agreement check.", ""]
    for path in md_paths:
        parts += [Path(path).read_text().strip(), ""]
    return "\n".join(parts)


def main(modules: dict[str, str], argv: Optional[list[str]] = None,
         prog: Optional[str] = None) -> int:
    """Command line: ``[NAME ...] [--quick] [--out DIR] [--repeats N]``.

    ``modules`` maps a benchmark name to its module path; no name runs them all. Writes each
    benchmark's ``.json`` and ``.md`` and the combined ``report.md`` into ``--out``.
    """
    parser = argparse.ArgumentParser(prog=prog,
                                     description="samplers against its peers, side by side")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(modules)})")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (about 5 minutes for all on 2 CPU cores)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="directory for .json and .md")
    parser.add_argument("--repeats", type=int, default=None, help="timings per side")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(modules))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(modules)}")
    pages = [run_benchmark(importlib.import_module(modules[name]), args.quick, args.out,
                           args.repeats) for name in args.names or list(modules)]
    report = Path(args.out) / "report.md"
    command = " ".join([prog or "python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    report.write_text(combined_report(pages, machine_info(), args.quick, command))
    print(f"wrote {report}")
    return 0

"""Smoke tests: the examples run on a CPU in under a minute, and the docs site builds.

Both run in a subprocess, as a user would run them, from the repository root.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# DESIGN.md: examples run on a laptop CPU in under a minute (20-30 s each, measured on an idle
# 2-core machine). Timing is not asserted here (no timed tests); the limit only stops a hang.
EXAMPLE_LIMIT_S = 300


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``python args...`` from the repository root with the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("MPLBACKEND", "Agg")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_eight_schools_example_runs_and_writes_its_trace_plot(tmp_path):
    result = _run([str(ROOT / "examples" / "eight_schools_mala.py"), "--out", str(tmp_path),
                   "--warmup", "200", "--samples", "200"], timeout=EXAMPLE_LIMIT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    plot = tmp_path / "eight_schools_trace.png"
    assert plot.exists() and plot.stat().st_size > 0, result.stdout[-2000:]
    summary = result.stdout
    for column in ("mean", "ess_bulk", "r_hat"):
        assert column in summary, summary
    for site in ("mu", "tau", "theta[0]", "theta[7]"):
        assert site in summary, summary


def test_federated_example_runs_and_writes_its_plot(tmp_path):
    result = _run([str(ROOT / "examples" / "federated_logistic.py"), "--out", str(tmp_path),
                   "--rounds", "100", "--burn-in", "20", "--chains", "4"], timeout=EXAMPLE_LIMIT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "federated_logistic.png").stat().st_size > 0


def test_sliced_flow_example_runs_and_writes_its_plot(tmp_path):
    result = _run([str(ROOT / "examples" / "sliced_flow.py"), "--out", str(tmp_path),
                   "--points", "200", "--steps", "30"], timeout=EXAMPLE_LIMIT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "sliced_flow.png").stat().st_size > 0


def test_diffusion_example_runs_and_writes_its_plots(tmp_path):
    result = _run([str(ROOT / "examples" / "diffusion_solvers.py"), "--out", str(tmp_path),
                   "--steps", "5,10", "--num-samples", "200"], timeout=EXAMPLE_LIMIT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    plots = list(tmp_path.rglob("*.png"))
    assert plots and all(p.stat().st_size > 0 for p in plots), sorted(tmp_path.rglob("*"))


def test_every_example_has_a_smoke_test():
    """Each script in examples/ is run by a test here or next to its method's tests."""
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert f'"{script.name}"' in tests, f"examples/{script.name} has no smoke test"


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    result = _run(["-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                   "--site-dir", str(site)], timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    for page in ("index.html", "getting-started/index.html", "langevin/index.html", "vi/index.html", "federated/index.html",
                 "sliced/index.html", "diffusion/index.html", "stein/index.html", "smc/index.html",
                 "api/index.html", "benchmarks/index.html", "which-sampler/index.html",
                 "guarantees/index.html", "bench-report/index.html"):
        assert (site / page).exists(), page
    assert "samplers.langevin.mala" in (site / "api" / "index.html").read_text()
    # the generated pages hold what `samplers verify` and `samplers bench` wrote
    assert "<!-- generated" not in (site / "guarantees" / "index.html").read_text()
    assert "peer/ours" in (site / "bench-report" / "index.html").read_text()
    assert "pass" in (site / "guarantees" / "index.html").read_text()

"""Smoke test of examples/sv_fit.py (tiny sizes) and the smc ``samplers demo`` row."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from samplers.smc.demo import demo_case

ROOT = Path(__file__).resolve().parents[1]


def _load_example():
    spec = importlib.util.spec_from_file_location("sv_fit", ROOT / "examples" / "sv_fit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sv_fit_example_runs_and_writes_its_plot(tmp_path):
    out = _load_example().main(["--out", str(tmp_path), "--steps", "30", "--particles", "4",
                                "--iterations", "5", "--smoothing-particles", "8"])
    assert out["plot"] == tmp_path / "sv_fit.png" and out["plot"].stat().st_size > 0
    assert out["sizes"] == {"steps": 30, "particles": 4, "iterations": 5, "smoothing_particles": 8}
    assert all(math.isfinite(v) for v in out["estimate"].values())
    assert all(math.isfinite(v) for v in out["rmse"].values())


def test_demo_row_matches_the_rts_marginals():
    """PPG's smoothing marginals against the RTS ones: with no bias, w2_error is the root mean
    square over t of errors whose standard errors (across the chains) give mc_error, so
    w2_error / mc_error is about 1; 3 would need a chi-square with a few degrees of freedom
    to exceed 9 times its mean (an unbiased run fails this about once in 10^4 or less)."""
    row = demo_case()
    assert set(row) >= {"method", "target", "w2_error", "min_ess", "seconds", "plot"}
    assert row["min_ess"] is None and row["plot"] is None and row["seconds"] > 0
    assert np.isfinite(row["w2_error"]) and 0 < row["mc_error"]
    assert row["w2_error"] <= 3 * row["mc_error"], row

"""Smoke test of examples/sv_fit.py (tiny sizes)."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

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

"""The rows of ``samplers demo``, one test per row function of the demos modules
(samplers.demos, vi.demos, diffusion.demos): each hits its exact answer to the accuracy
its method and sizes allow. The CLI that runs them is tests/test_cli.py."""
import math

import numpy as np

from diffusion.demos import diffusion_row
from samplers.demos import smc_row, sw_flow_row
from vi.demos import fbgvi_row


def test_diffusion_row():
    row = diffusion_row()
    assert set(row) >= {"method", "target", "w2_error", "min_ess", "seconds"}
    assert row["min_ess"] is None and math.isfinite(row["w2_error"])
    # exact W2 of the float32 sampler's law; measured 0.0122 (float64 floor from the prior
    # mismatch alpha_1 |mu| ~ 0.005), so 0.05 would flag a broken solver, not noise
    assert row["w2_error"] < 0.05


def test_fbgvi_row():
    row = fbgvi_row(num_steps=200)
    assert row["method"] == "fbgvi" and row["target"] == "gaussian" and row["seconds"] > 0
    # float32: W2 near 0 is resolved only to about sqrt(eps * tr) ~ 5e-4 (gaussian_w2 docstring)
    assert row["w2_error"] < 5e-3


def test_sw_flow_row():
    row = sw_flow_row(num_points=64, num_steps=200)
    assert set(row) >= {"method", "target", "w2_error", "seconds"}
    assert 0 <= row["w2_error"] < 0.2 and row["seconds"] > 0


def test_smc_row_matches_the_rts_marginals():
    """PPG's smoothing marginals against the RTS ones: with no bias, w2_error is the root mean
    square over t of errors whose standard errors (across the chains) give mc_error, so
    w2_error / mc_error is about 1; 3 would need a chi-square with a few degrees of freedom
    to exceed 9 times its mean (an unbiased run fails this about once in 10^4 or less)."""
    row = smc_row()
    assert set(row) >= {"method", "target", "w2_error", "min_ess", "seconds", "plot"}
    assert row["min_ess"] is None and row["plot"] is None and row["seconds"] > 0
    assert np.isfinite(row["w2_error"]) and 0 < row["mc_error"]
    assert row["w2_error"] <= 3 * row["mc_error"], row

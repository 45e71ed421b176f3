"""Shared helpers: Monte Carlo standard errors from effective sample sizes."""
import arviz as az
import numpy as np


def ess(x):
    """ArviZ bulk ESS of a (chain, draw) array (one series)."""
    return float(az.ess(np.asarray(x, dtype=np.float64)))


def mc_mean(x):
    """Mean of a (chain, draw) series and its Monte Carlo standard error (ESS-based)."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(), x.std() / np.sqrt(ess(x))


def assert_within(estimate, se, expected, z=5.0, what="estimate"):
    """|estimate - expected| <= z standard errors (z = 5: a false alarm once in ~2e6)."""
    assert abs(estimate - expected) <= z * se, (
        f"{what}: {estimate:.6g} vs expected {expected:.6g}, "
        f"{abs(estimate - expected) / se:.1f} standard errors (se {se:.3g})")

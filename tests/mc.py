"""The suite's one Monte Carlo helper: standard errors and the z a test allows.

Every statistical test computes its tolerance here, as ``z`` standard errors of what it
measured: of a mean from iid draws (:func:`se_mean`) or from correlated chains through
ArviZ's ESS (:func:`mc_mean`), of a Gaussian sample's variance (:func:`se_var`), of a
proportion (:func:`se_proportion`), of a log-log slope from the regression's own standard
error (:func:`slope`, :func:`weighted_slope`). Import as ``from mc import ...``.

z and its false-alarm rate (two-sided, a correct method failing one assertion):
``Z = 5`` once in 1.7e6, the default; ``Z4 = 4`` once in 1.6e4, where a test's sizes cannot
afford 5 (the test says so).
"""
import arviz as az
import numpy as np

Z = 5.0   # P(|N(0, 1)| > 5) = 5.7e-7
Z4 = 4.0  # P(|N(0, 1)| > 4) = 6.3e-5


def ess(x):
    """ArviZ bulk ESS of a (chain, draw) array (one series)."""
    return float(az.ess(np.asarray(x, dtype=np.float64)))


def mc_mean(x):
    """Mean of a (chain, draw) series and its Monte Carlo standard error (ESS-based)."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(), x.std() / np.sqrt(ess(x))


def se_mean(x, axis=0, ddof=1):
    """Standard error of the mean of iid draws along ``axis`` (all of them for None):
    sd / sqrt(n)."""
    x = np.asarray(x, dtype=np.float64)
    return x.std(axis=axis, ddof=ddof) / np.sqrt(x.size if axis is None else x.shape[axis])


def se_var(var, n):
    """Standard error of the sample variance of n iid Gaussian draws of variance ``var``:
    sqrt(2 / n) var."""
    return np.sqrt(2.0 / n) * np.asarray(var, dtype=np.float64)


def se_proportion(p, n):
    """Binomial standard error of a proportion p of n: sqrt(p (1 - p) / n)."""
    return np.sqrt(p * (1.0 - p) / n)


def slope(x, y):
    """Least-squares slope of log y on log x and its standard error (from the residuals)."""
    (b, _), cov = np.polyfit(np.log(x), np.log(y), 1, cov=True)
    return float(b), float(np.sqrt(cov[0, 0]))


def weighted_slope(x, y, se_y):
    """Weighted least-squares slope of log y on log x, the weights 1 / var(log y) with
    var(log y) = (se_y / y)^2 (delta method), and its standard error."""
    lx, ly = np.log(x), np.log(y)
    w = (np.asarray(y) / np.asarray(se_y)) ** 2
    xm = np.sum(w * lx) / np.sum(w)
    b = np.sum(w * (lx - xm) * ly) / np.sum(w * (lx - xm) ** 2)
    return float(b), float(1.0 / np.sqrt(np.sum(w * (lx - xm) ** 2)))


def assert_within(estimate, se, expected, z=Z, what="estimate"):
    """|estimate - expected| <= z standard errors, elementwise for arrays (the message names
    the worst entry)."""
    estimate, se, expected = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                                   for v in (estimate, se, expected)))
    ratio = np.abs(estimate - expected) / se
    worst = np.unravel_index(np.argmax(np.where(np.isnan(ratio), np.inf, ratio)), ratio.shape)
    assert np.all(np.abs(estimate - expected) <= z * se), (
        f"{what}{list(worst) if ratio.ndim else ''}: {estimate[worst]:.6g} vs expected "
        f"{expected[worst]:.6g}, {ratio[worst]:.1f} standard errors (se {se[worst]:.3g})")

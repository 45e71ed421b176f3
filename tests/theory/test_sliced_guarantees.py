"""Guarantees of the control-variate sliced Wasserstein estimators (Nguyen & Ho, ICLR 2024,
arXiv 2305.00402), measured against the claims as the shared notes corrected them:

* the cross-fitted coefficient is exactly unbiased; the least-squares and the authors'
  ("reference") coefficients are not (O(1/L) bias; shared note B.2: -5 % at L = 2 for the
  reference) -- so the issue's "both CV estimators are unbiased" is asserted for the
  cross-fitted coefficient only;
* the reported standard error matches the spread of the estimate over keys;
* the variance reduction is 1 / (1 - rho(W, C)^2) up to the cost of fitting gamma: it is
  large where W and C are strongly correlated and can fall below 1 where they are not
  (a centred ring x3 against a square, L = 10: measured x0.8), so "the upper CV always
  helps" is not asserted.
"""
from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from mc import Z, se_mean
from samplers import sliced


def _clouds(seed=0, n=200):
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    ring = np.stack([np.cos(angle), np.sin(angle)], 1) * (1.5 + 0.1 * rng.standard_normal((n, 1)))
    square = rng.uniform(-1.0, 1.0, (n, 2)) * np.array([2.0, 0.5])
    blob = rng.standard_normal((n, 2)) * np.array([1.0, 0.3])
    return {k: v.astype(np.float32) for k, v in
            dict(ring=ring, square=square, blob=blob, shifted=square + [1.0, 0.5]).items()}


def _over_keys(x, y, num_keys, seed=1, **kwargs):
    keys = jax.random.split(jax.random.key(seed), num_keys)
    fn = jax.jit(jax.vmap(lambda k: sliced.sliced_wasserstein_estimate(k, x, y, **kwargs)))
    return jax.tree.map(np.asarray, fn(keys))


def test_crossfit_coefficient_unbiased_at_small_L():
    """L = 4 (halves of two directions), lower and upper CVs: the cross-fitted estimate minus
    the plain one on the same directions has mean 0 within its paired SE (2000 keys). (The
    reference coefficient's O(1/L) bias reported in the shared note, measured on 2048-point
    ShapeNet clouds, was not resolved on these 200-point clouds at L = 4: |bias| < 1 SE.)"""
    c = _clouds()
    x, y = c["ring"], c["square"] + np.float32([6.0, 3.0])
    for cv in ("lower", "upper"):
        est = _over_keys(x, y, 2000, num_projections=4, control_variate=cv, coefficient="crossfit")
        diff = est.value - est.plain
        assert abs(diff.mean()) <= Z * se_mean(diff), cv


def test_reported_standard_error_matches_spread_over_keys():
    """Mean reported SE^2 against the variance of the estimates over 400 keys: equal up to
    the sampling error of a variance from 400 draws (log sd ~ sqrt(2/399))."""
    c = _clouds()
    for cv, coef in ((None, "ols"), ("upper", "crossfit")):
        est = _over_keys(c["ring"], c["blob"], 400, num_projections=40, control_variate=cv,
                         coefficient=coef)
        log_ratio = math.log(np.mean(est.stderr**2) / est.value.var(ddof=1))
        assert abs(log_ratio) <= Z * math.sqrt(2 / 399) + 0.1, (cv, log_ratio)


@pytest.mark.parametrize("pair, cv, helps", [
    (("ring", "shifted"), "lower", True),     # means differ: the lower CV helps
    (("ring", "blob"), "upper", True),        # scales differ by direction: the upper CV helps
    (("ring", "square"), "lower", False),     # centred clouds: nothing for the lower CV to use
])
def test_variance_ratio_over_keys(pair, cv, helps):
    c = _clouds()
    est = _over_keys(c[pair[0]], c[pair[1]], 400, num_projections=20, control_variate=cv,
                     coefficient="ols")
    ratio = est.plain.var() / est.value.var()
    band = math.exp(Z * math.sqrt(4 / 399))
    if helps:
        assert ratio > band, ratio
    else:
        assert ratio < band, ratio


@pytest.mark.slow
def test_variance_reduction_table(capsys):
    """The table of docs/sliced.md: Var(plain)/Var(CV) over 1000 keys, L = 10 and 100."""
    rng = np.random.default_rng(3)
    c = _clouds()
    gauss_x = rng.standard_normal((1000, 10)).astype(np.float32)
    gauss_y = (1 + 2 * rng.standard_normal((1000, 10))).astype(np.float32)
    unif = rng.uniform(size=(1000, 3)).astype(np.float32)
    expo = (rng.exponential(size=(1000, 3)) * np.array([1, 2, 3])).astype(np.float32)
    pairs = {"N(0,I) vs N(1,4I), d=10": (gauss_x, gauss_y),
             "U[0,1]^3 vs Exp(1,2,3), d=3": (unif, expo),
             "ring vs shifted square, d=2": (c["ring"], c["shifted"]),
             "ring vs blob (centred), d=2": (c["ring"], c["blob"]),
             "3 x ring vs square (centred), d=2": (3 * c["ring"], c["square"])}
    lines = ["| pair | L | plain mean | lower (ols) | upper (ols) | upper (crossfit) |",
             "|---|---|---|---|---|---|"]
    for name, (x, y) in pairs.items():
        for L in (10, 100):
            cells = []
            for cv, coef in (("lower", "ols"), ("upper", "ols"), ("upper", "crossfit")):
                est = _over_keys(x, y, 1000, num_projections=L, control_variate=cv,
                                 coefficient=coef)
                cells.append(f"{est.value.mean():.4g} (x{est.plain.var() / est.value.var():.3g})")
            lines.append(f"| {name} | {L} | {est.plain.mean():.4g} | " + " | ".join(cells) + " |")
    with capsys.disabled():
        print("\n" + "\n".join(lines))

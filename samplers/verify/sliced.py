"""Guarantee checks of the sliced Wasserstein estimators and flow (``samplers verify
--method sliced``; [Nguyen2024]; the method and its guarantees are on docs/sliced.md).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import sliced
from ..run import run
from . import Check, Outcome, within


def two_clouds(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A noisy ring of radius 1.5 and a shifted anisotropic Gaussian blob in R^2 (float32):
    different means and shapes, so neither control variate is exact on them."""
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, n)
    ring = np.stack([np.cos(angle), np.sin(angle)], 1) * (1.5 + 0.1 * rng.standard_normal((n, 1)))
    blob = rng.standard_normal((n, 2)) * np.array([1.0, 0.3]) + np.array([1.0, 0.5])
    return ring.astype(np.float32), blob.astype(np.float32)


def sw2_quadrature(x, y, num_angles: int = 1 << 14) -> float:
    """SW_2^2 of two equal-size clouds in R^2 from its definition [Nguyen2024, eq. 1]
    by the trapezoid rule over theta = (cos t, sin t), t in [0, pi) (W(theta) = W(-theta) is
    pi-periodic), each 1-d W_2^2 by sorting: the exact value of the clouds, independent of
    the estimator's code."""
    t = np.pi * np.arange(num_angles) / num_angles
    theta = np.stack([np.cos(t), np.sin(t)], 1)
    px = np.sort(theta @ np.asarray(x, np.float64).T, axis=1)
    py = np.sort(theta @ np.asarray(y, np.float64).T, axis=1)
    return float(np.mean((px - py) ** 2))


def cv_unbiased(make: Callable = sliced.sliced_wasserstein_estimate) -> Check:
    """The upper control-variate estimate of SW_2^2 with the cross-fitted coefficient (gamma of
    each half of the L directions applied to the other) is exactly unbiased ([Nguyen2024],
    eqs. 10-11 with a coefficient independent of the directions it corrects): its
    mean over keys equals the clouds' SW_2^2 by quadrature, within 5 SE of that mean.
    ``make(key, x, y, num_projections=, control_variate=, coefficient=)`` is the estimator."""
    L = 10

    def measure(key, full: bool) -> Outcome:
        num_keys = 200000 if full else 20000
        x, y = two_clouds()
        fn = jax.jit(jax.vmap(lambda k: make(k, x, y, num_projections=L, control_variate="upper",
                                             coefficient="crossfit").value))
        keys = jax.random.split(key, num_keys).reshape(-1, 2000)  # ~0.1 GB per call
        est = np.concatenate([np.asarray(fn(k), np.float64) for k in keys])
        return within(est.mean(), sw2_quadrature(x, y), est.std(ddof=1) / math.sqrt(num_keys),
                      f"mean upper-CV (cross-fitted) SW_2^2, ring vs blob (n = 200, d = 2), "
                      f"L = {L}, {num_keys} keys")

    return Check("sliced_wasserstein", "Nguyen2024",
                 "control-variate estimate unbiased (cross-fitted coefficient)", measure)


def flow_contraction(step_size: float, num_projections: int, dim: int) -> float:
    """Per-step factor r of E|s|^2 for the SW_2^2 flow on a translate x = y + s of its target.

    The 1-d optimal maps are shifts by theta^T s, so every particle moves by
    -2 h Theta s, Theta = (1/L) sum_l theta_l theta_l^T (the step x <- x - h n grad SW_2^2 of
    :func:`samplers.sliced.sliced_wasserstein_flow`): s' = (I - 2 h Theta) s. With
    E Theta = I/d and E Theta^2 = I/(L d) + (L - 1) I/(L d^2) (theta on the unit sphere),
    E|s'|^2 = r |s|^2, r = 1 - 4h/d + 4h^2 (1/(L d) + (L - 1)/(L d^2))."""
    h, L, d = step_size, num_projections, dim
    return 1 - 4 * h / d + 4 * h ** 2 * (1 / (L * d) + (L - 1) / (L * d ** 2))


def flow_translate(make: Callable = sliced.sliced_wasserstein_flow) -> Check:
    """The sliced Wasserstein flow [Nguyen2024, section 4] (plain estimator) started at a
    translate of its target stays a translate, and its offset s_k obeys
    E|s_k|^2 = r^k |s_0|^2 (:func:`flow_contraction`; derived from the flow's definition, the
    paper states no rate). ``make(target, step_size, num_projections=)`` builds the flow."""
    h, L, steps = 0.25, 4, 5

    def measure(key, full: bool) -> Outcome:
        chains = 20000 if full else 2000
        target = two_clouds(64)[0]
        shift = np.float32([2.0, -1.0])
        flow = make(jnp.asarray(target), h, num_projections=L)
        trace = run(key, flow, jnp.asarray(target + shift), steps, num_chains=chains,
                    thin=steps, progress=False)
        offset = np.asarray(trace.positions[:, -1], np.float64).mean(1) - target.mean(0)
        ratio = np.sum(offset ** 2, axis=1) / float(shift @ shift)
        d = target.shape[1]
        return within(ratio.mean(), flow_contraction(h, L, d) ** steps,
                      ratio.std(ddof=1) / math.sqrt(chains),
                      f"E|s_k|^2 / |s_0|^2 after k = {steps} steps of h = {h:g}, L = {L}, "
                      f"n = 64, d = {d} (L = inf: {(1 - 2 * h / d) ** (2 * steps):.3g}), "
                      f"{chains} runs")

    return Check("sw_flow", "Nguyen2024, Sec. 4 (rate derived here)",
                 "exact mean-square contraction on a translate",
                 measure)


def checks() -> list[Check]:
    """The sliced Wasserstein checks."""
    return [cv_unbiased(), flow_translate()]

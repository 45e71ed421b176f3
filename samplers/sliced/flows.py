"""Sliced Wasserstein flows: particles moved down the gradient of an SW estimate towards a
target cloud [Nguyen2024, Sec. 4], as an :class:`~samplers.base.Algorithm` for
:func:`samplers.run`.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ..base import Algorithm
from ..validation import check_choice, check_one_array, check_positive
from ._checks import _check_options, _check_points, _check_weights
from .estimators import MIN_CV_PROJECTIONS, _estimate_pair, _root, _summarise, _terms
from .projections import _directions

__all__ = ["SWFlowState", "SWFlowInfo", "sliced_wasserstein_flow"]


class SWFlowState(NamedTuple):
    """State of a sliced Wasserstein flow: the particles (n, d)."""

    position: jax.Array


class SWFlowInfo(NamedTuple):
    """Per-step statistics: the SW_p^p estimate at the particles before the step, its
    standard error and the measured variance reduction of the control variate."""

    sw: jax.Array
    stderr: jax.Array
    variance_factor: jax.Array


def sliced_wasserstein_flow(target_points, step_size: float, *, num_projections: int = 100,
                            p: float = 2, control_variate: Optional[str] = None,
                            coefficient: str = "ols", target_weights=None,
                            scheme: str = "mc", objective: str = "power",
                            stop_gradient_coefficient: bool = False) -> Algorithm:
    """A sliced Wasserstein flow towards a target cloud, as an :class:`Algorithm`.

    Each step draws L fresh directions and moves the n particles x down the gradient of the
    estimated SW [Nguyen2024, Sec. 4, "gradient flows"]:

        x <- x - step_size * n * grad_x F(x),

    F = the SW_p^p estimate (``objective="power"``; for p = 2 the particle velocity is then
    -2 E_theta[theta (theta^T x_i - T_theta(theta^T x_i))], T_theta the 1-d optimal map) or
    SW_p itself (``objective="distance"``: the authors' loss N * SW_2 with plain SGD). With a
    control variate the gradient of the CV estimate is used: same cost, lower variance.

    Args:
      target_points: (m, d) target cloud.
      step_size: > 0.
      num_projections, p, control_variate, coefficient, scheme: as in
        :func:`sliced_wasserstein_estimate`.
      target_weights: optional (m,) non-negative weights of the target.
      objective: "power" or "distance".
      stop_gradient_coefficient: True treats gamma as a constant in the gradient (the
        authors' code differentiates through it: False).

    Returns:
      ``Algorithm(init, step, name="sw_flow")``; ``init(position (n, d), key=None)``,
      ``step(key, state, batch=None) -> (SWFlowState, SWFlowInfo)``. Use with
      ``samplers.run(key, flow, source_points, num_steps)``.
    """
    target = _check_points("target_points", target_points)
    if target.ndim != 2:
        raise ValueError(f"target_points must have shape (m, d), got shape {target.shape}")
    b = _check_weights("target_weights", target_weights, "target_points", target)
    check_positive("step_size", step_size)
    _check_options(num_projections, p, control_variate, coefficient, scheme)
    check_choice("objective", objective, ("power", "distance"))
    num, pf, dim = int(num_projections), float(p), target.shape[1]

    def loss(x, theta):
        tgt = target.astype(x.dtype)
        bb = None if b is None else b.astype(x.dtype)
        est = _estimate_pair(x, tgt, None, bb, theta, pf, control_variate, coefficient, scheme)
        if stop_gradient_coefficient and control_variate is not None \
                and num >= MIN_CV_PROJECTIONS:
            # gamma frozen: differentiate (1/L) sum_l W_l - gamma (C_l - E C) with gamma fixed
            w, c_dev = _terms(x, tgt, None, bb, theta, pf, control_variate)
            gamma = jax.lax.stop_gradient(est.gamma)
            est = _summarise(w, w - gamma * c_dev, gamma, 1, pf, scheme, dim)
        value = est.value if objective == "power" else _root(est.value, pf)
        return value, est

    def init(position, key=None):
        check_one_array("position", position, f"(n, {dim}) (the particles)")
        position = jnp.asarray(position)
        if position.ndim != 2 or position.shape[1] != dim:
            raise ValueError(f"position must have shape (n, {dim}) (the target's dimension), "
                             f"got shape {position.shape}")
        if not jnp.issubdtype(position.dtype, jnp.floating):
            position = position.astype(jnp.result_type(float))
        return SWFlowState(position)

    def step(key, state, batch=None):
        x = state.position
        theta = _directions(key, num, dim, scheme, x.dtype)
        grad, est = jax.grad(loss, has_aux=True)(x, theta)
        x = x - step_size * x.shape[0] * grad
        return SWFlowState(x), SWFlowInfo(est.value, est.stderr, est.variance_factor)

    return Algorithm(init=init, step=step, name="sw_flow")

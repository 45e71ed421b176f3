"""Trained networks as users have them: batched, any event shape, five parameterisations,
conditioning and classifier-free guidance.

A :class:`Network` wraps ``apply_fn(params, x, t, cond)``, where ``x`` is a batch of shape
(n, *shape), ``t`` the network's time input of shape (n,) (``sde.model_time(t)``: t itself
for the continuous SDEs, the timestep index for :class:`diffusion.DiscreteVPSDE`;
EDM's c_noise for ``prediction="edm"``) and ``cond`` a batch of conditions (a pytree whose
leaves have n rows) or None; it returns the prediction for the batch, of shape (n, *shape).
The solvers turn every prediction into the noise prediction eps of x_t = alpha_t x_0 +
sigma_t eps (any linear SDE; :func:`eps_function`):

* ``"eps"`` [Ho2020, eq. 11]: eps;
* ``"x0"`` (data prediction, a denoiser): eps = (x - alpha_t x0) / sigma_t;
* ``"v"`` [Salimans2022, Sec. 4]:
  v = alpha_t eps - sigma_t x0, so eps = (sigma_t x + alpha_t v) / (alpha_t^2 + sigma_t^2)
  (= sigma_t x + alpha_t v for VP);
* ``"score"``: eps = -sigma_t score;
* ``"edm"`` ([Karras2022], "Elucidating the Design Space", Table 1, with
  sigma_data = ``sigma_data``): the network is EDM's raw F and the denoiser is
  D(x~; s) = c_skip x~ + c_out F(c_in x~; c_noise) in EDM's scale x~ = x / alpha_t, s =
  sigma_t / alpha_t, with c_skip = sd^2/(s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2),
  c_in = 1 / sqrt(s^2 + sd^2), c_noise = ln(s) / 4; then eps = (x~ - D) / s
  = (s x~ - sd sqrt(s^2 + sd^2) F) / (s^2 + sd^2).

Classifier-free guidance [Ho2022, eq. 6] (written as diffusers does): with a
``guidance_scale`` w the prediction is pred(null) + w (pred(cond) - pred(null)); w = 1 is the
conditional model and w = 0 the unconditional one (the paper's (1 + w') pred(cond) - w'
pred(null) is w = 1 + w'). Every conversion above is affine in the prediction with
coefficients that do not depend on it, so guiding the prediction equals guiding eps. The
null condition is the argument ``null_cond``: ONE condition (the structure of one row of
``cond``), broadcast to the batch, that the network was trained with when the condition was
dropped (a "no class" label, an empty-prompt embedding); ``null_cond=None`` calls
``apply_fn(params, x, t, None)`` for the unconditional prediction.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from samplers.validation import check_choice, check_positive

__all__ = ["Network", "PREDICTIONS", "eps_function", "edm_preconditioning"]

PREDICTIONS = ("eps", "x0", "v", "score", "edm")


@dataclasses.dataclass(frozen=True)
class Network:
    """A trained network ``apply_fn(params, x, t, cond) -> prediction`` (batched; see the
    module docstring for shapes) and what it predicts: ``prediction`` one of ``PREDICTIONS``;
    ``sigma_data`` is EDM's data standard deviation (``prediction="edm"`` only; [Karras2022]
    use 0.5). Hashable (it is a static argument of the compiled sampler, compared by
    ``apply_fn``'s identity: build the Network once, since a new lambda or
    ``functools.partial`` each call compiles anew); the network's parameters and conditions
    are not part of it: they are the ``params`` and ``cond`` arguments of
    :func:`diffusion.sample`, :func:`diffusion.solve_ode` and :func:`diffusion.solve_sde`."""

    apply_fn: Callable
    prediction: str = "eps"
    sigma_data: float = 0.5

    def __post_init__(self):
        if not callable(self.apply_fn):
            raise TypeError(f"apply_fn must be a callable apply_fn(params, x, t, cond), got "
                            f"{self.apply_fn!r}")
        check_choice("prediction", self.prediction, PREDICTIONS)
        check_positive("sigma_data", self.sigma_data)


def _broadcast_rows(tree, n):
    """Every leaf of one condition repeated over a leading batch axis of n rows."""
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (n,) + jnp.shape(leaf)), tree)


def edm_preconditioning(sigma, sigma_data):
    """EDM's preconditioning at noise level ``sigma`` [Karras2022, Table 1]:
    ``(c_skip, c_out, c_in, c_noise)`` = (sd^2 / (sigma^2 + sd^2), sigma sd / sqrt(sigma^2 +
    sd^2), 1 / sqrt(sigma^2 + sd^2), ln(sigma) / 4) with sd = ``sigma_data``; the denoiser is
    D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) (their eq. 7). Elementwise in sigma."""
    root = jnp.sqrt(sigma ** 2 + sigma_data ** 2)
    return sigma_data ** 2 / root ** 2, sigma * sigma_data / root, 1.0 / root, jnp.log(sigma) / 4.0


def apply_checked(network: Network, params, x, t_in, cond):
    """``network.apply_fn(params, x, t_in, cond)``, refused (TypeError, while tracing) unless
    it returns the batch's shape."""
    out = network.apply_fn(params, x, t_in, cond)
    if jnp.shape(out) != x.shape:
        raise TypeError(f"apply_fn must return the prediction for the batch, of shape "
                        f"{x.shape} for x of shape {x.shape}, got {jnp.shape(out)}")
    return out


def eps_function(sde, network: Network, params, cond=None, null_cond=None,
                 guidance_scale=None) -> Callable:
    """The batched noise prediction ``eps(x, t)`` (x of shape (n, *shape), scalar t) of
    ``network`` under ``sde``, guided with ``guidance_scale`` when it is not None (see the
    module docstring for the conversions and the guidance rule). ``params``, ``cond``,
    ``null_cond`` and ``guidance_scale`` may be tracers: the solvers call this inside their
    compiled function."""
    kind = network.prediction
    sd = network.sigma_data

    def predict(x, t, c):
        n = x.shape[0]
        if kind == "edm":
            _, _, c_in, t_in = edm_preconditioning(sde.sigma(t) / sde.alpha(t), sd)
            x_in = c_in * x / sde.alpha(t)
        else:
            x_in, t_in = x, sde.model_time(t)
        return apply_checked(network, params, x_in, jnp.full((n,), t_in, x.dtype), c)

    def eps(x, t):
        pred = predict(x, t, cond)
        if guidance_scale is not None:
            null = predict(x, t, None if null_cond is None else _broadcast_rows(null_cond,
                                                                                 x.shape[0]))
            pred = null + guidance_scale * (pred - null)
        a, s = sde.alpha(t), sde.sigma(t)
        if kind == "eps":
            return pred
        if kind == "x0":
            return (x - a * pred) / s
        if kind == "v":
            return (s * x + a * pred) / (a ** 2 + s ** 2)
        if kind == "score":
            return -s * pred
        s_edm = s / a  # kind == "edm"
        return (s_edm * x / a - sd * jnp.sqrt(s_edm ** 2 + sd ** 2) * pred) / (s_edm ** 2 + sd ** 2)

    return eps


def check_conditions(network, num_points, params, cond, null_cond, guidance_scale):
    """Validate the traced arguments of a sampler (shapes only): ``cond`` a pytree whose
    leaves have ``num_points`` rows; ``null_cond`` one row of it; ``guidance_scale`` a real
    scalar, given with ``cond``. A plain ``score(x, t)`` callable takes none of them.
    Returns ``guidance_scale`` as an array (or None)."""
    if not isinstance(network, Network):
        given = [name for name, value in (("params", params), ("cond", cond),
                                          ("null_cond", null_cond),
                                          ("guidance_scale", guidance_scale)) if value is not None]
        if given:
            raise TypeError(f"{', '.join(given)} apply to a diffusion.Network model; the model "
                            f"is a plain score(x, t) callable, got {network!r}")
        return None
    for path, leaf in jax.tree_util.tree_leaves_with_path(cond):
        shape = jnp.shape(leaf)
        if not shape or shape[0] != num_points:
            raise ValueError(f"cond must be a batch with one row per point ({num_points}), got "
                             f"shape {shape} at {jax.tree_util.keystr(path) or 'cond'}")
    if null_cond is not None:
        if cond is None:
            raise ValueError("null_cond is the unconditional counterpart of cond; got null_cond "
                             "without cond")
        cond_leaves, cond_def = jax.tree.flatten(cond)
        null_leaves, null_def = jax.tree.flatten(null_cond)
        rows = [jnp.shape(leaf)[1:] for leaf in cond_leaves]
        nulls = [jnp.shape(leaf) for leaf in null_leaves]
        if cond_def != null_def or rows != nulls:
            raise ValueError(f"null_cond must be one row of cond (shapes {rows}), got shapes "
                             f"{nulls}")
    if guidance_scale is None:
        return None
    if cond is None:
        raise ValueError(f"guidance_scale needs cond (it mixes the conditional and unconditional "
                         f"predictions), got guidance_scale={guidance_scale!r} and cond=None")
    w = jnp.asarray(guidance_scale)
    if w.shape != () or not (jnp.issubdtype(w.dtype, jnp.floating)
                             or jnp.issubdtype(w.dtype, jnp.integer)):
        raise TypeError(f"guidance_scale must be a real scalar (w = 1: the conditional model), "
                        f"got {guidance_scale!r}")
    return w

"""A small MLP noise predictor with a Fourier time embedding, as pure functions of a params
pytree (no framework): ``model = mlp(hidden=(128, 128))``, ``params = model.init(key, dim)``,
``eps = model.apply(params, x, t)`` for one point x (dim,) and scalar t.

The time embedding is [sin(2 pi w_k t), cos(2 pi w_k t)] with fixed frequencies w_k = 2^k
(k = 0 .. num_frequencies - 1), concatenated to x (the "Fourier features" of Tancik et al.
2020, as used by Song et al. 2021's NCSN++ in random form).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

__all__ = ["MLP", "mlp"]


class MLP(NamedTuple):
    """``init(key, dim) -> params``; ``apply(params, x, t) -> (dim,)``."""

    init: Callable
    apply: Callable
    hidden: tuple
    num_frequencies: int


def mlp(hidden: Sequence[int] = (128, 128), num_frequencies: int = 8,
        activation: Callable = jax.nn.silu) -> MLP:
    """A noise-prediction MLP eps(x, t); see the module docstring."""
    hidden = tuple(int(h) for h in hidden)
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {hidden!r}")
    if int(num_frequencies) < 1:
        raise ValueError(f"num_frequencies must be >= 1, got {num_frequencies!r}")
    freqs = 2.0 ** jnp.arange(num_frequencies)

    def init(key, dim):
        sizes = (dim + 2 * num_frequencies,) + hidden + (dim,)
        keys = jax.random.split(key, len(sizes) - 1)
        params = []
        for k, (m, n) in zip(keys, zip(sizes[:-1], sizes[1:])):
            w = jax.random.normal(k, (m, n)) * math.sqrt(1.0 / m)
            params.append({"w": w, "b": jnp.zeros(n)})
        params[-1]["w"] = params[-1]["w"] * 0.1
        return params

    def apply(params, x, t):
        ang = 2 * math.pi * freqs.astype(x.dtype) * t
        h = jnp.concatenate([x, jnp.sin(ang), jnp.cos(ang)])
        for layer in params[:-1]:
            h = activation(h @ layer["w"] + layer["b"])
        return h @ params[-1]["w"] + params[-1]["b"]

    return MLP(init, apply, hidden, int(num_frequencies))
